// Routed-expert (MoE) data movement and grouped GEMM: the kernels under the ops
//   moe_permute(x, topk_ids, E) -> (x_sorted, sorted_to_token, expert_offsets)
//   moe_unpermute(y_sorted, sorted_to_token, topk_weights) -> y
//   grouped_gemm(x_sorted, w, expert_offsets) -> out      (NT, DeepGEMM's "contiguous" layout)
//
// Dimensions: T tokens, K routed choices per token (top-k), E routed experts, M = T*K routed rows,
// H the row width of x (model width), N the expert output width.
//
// A "slot" is one (token, choice) pair, named by its flat index s = t*K + k into topk_ids [T, K].
// Routing sorts the M slots by expert; row r of every "sorted" tensor belongs to one slot:
//   sorted_to_token[r] = s      the SLOT (not the token) feeding sorted row r; token t = s / K and
//                               choice k = s % K. The op keeps the name sorted_to_token;
//                               storing the slot lets unpermute find both t and the weight w[t, k].
//   token_to_sorted[s] = r      the inverse permutation (slot -> sorted row), used by unpermute and
//                               by the backward passes.
//   expert_offsets[e]           rows of expert e are [expert_offsets[e], expert_offsets[e+1]);
//                               expert_offsets[0] = 0, expert_offsets[E] = M.
// The sort is stable: inside an expert, rows are in ascending slot order (ascending token, then k).
// Index tensors are int64 (torch.long), matching torch.topk's indices.
#pragma once

#include <cstdint>

namespace ts::kern {

// ---------------------------------------------------------------------------------------------
// Routing index build
// ---------------------------------------------------------------------------------------------
struct MoeRoutingParams {
  const int64_t* topk_ids = nullptr;   // [T, K] expert of each slot, valid range [0, E)
  int64_t* expert_offsets = nullptr;   // [E + 1] out
  int64_t* sorted_to_token = nullptr;  // [M] out: slot s = t*K + k of sorted row r
  int64_t* token_to_sorted = nullptr;  // [M] out: sorted row of slot s
  int64_t tokens = 0;                  // T
  int64_t topk = 0;                    // K
  int64_t experts = 0;                 // E
};

// Result of the routing build. When an id lies outside [0, E), `ok` is false and (token, k, id)
// name the first such slot in row-major order, so the op layer can raise a precise error.
struct MoeRoutingStatus {
  bool ok = true;
  int64_t token = -1;  // t of the first bad slot
  int64_t k = -1;      // k of the first bad slot
  int64_t id = 0;      // the offending expert id
};

// Stable counting sort by expert, threaded over slot chunks (per-chunk histograms give each chunk
// its own write positions, so the result is the same for every thread count). With a bad id the
// outputs are left untouched.
MoeRoutingStatus moe_routing_cpu(const MoeRoutingParams& p);

// ---------------------------------------------------------------------------------------------
// Permute / unpermute (fp32 on the CPU; row copies and weighted row sums, threaded over rows)
// ---------------------------------------------------------------------------------------------
struct MoePermuteParams {
  const float* x = nullptr;                  // [T, H]
  const int64_t* sorted_to_token = nullptr;  // [M] slots, from moe_routing
  float* x_sorted = nullptr;                 // [M, H] out: x_sorted[r] = x[sorted_to_token[r] / K]
  int64_t tokens = 0;                        // T
  int64_t topk = 0;                          // K
  int64_t hidden = 0;                        // H
  // [M] optional, the inverse of sorted_to_token (from moe_routing): with it the CPU twin walks
  // tokens and reads each row of x once for its K copies.
  const int64_t* token_to_sorted = nullptr;
};

// Backward of permute: grad_x[t] = sum_{k=0..K-1} grad_x_sorted[token_to_sorted[t*K + k]],
// summed in that order (deterministic).
struct MoePermuteBackwardParams {
  const float* grad_x_sorted = nullptr;      // [M, H]
  const int64_t* token_to_sorted = nullptr;  // [M]
  float* grad_x = nullptr;                   // [T, H] out
  int64_t tokens = 0, topk = 0, hidden = 0;
};

// y[t] = sum_{k=0..K-1} w[t, k] * y_sorted[token_to_sorted[t*K + k]], fp32, summed in order k.
struct MoeUnpermuteParams {
  const float* y_sorted = nullptr;           // [M, H]
  const int64_t* token_to_sorted = nullptr;  // [M]
  const float* topk_weights = nullptr;       // [T, K] gate weights (fp32 on every device)
  float* y = nullptr;                        // [T, H] out
  int64_t tokens = 0, topk = 0, hidden = 0;
};

// Backward of unpermute, for each slot s = t*K + k with r = token_to_sorted[s]:
//   grad_y_sorted[r]      = w[t, k] * grad_y[t]
//   grad_topk_weights[s]  = dot(grad_y[t], y_sorted[r])     (fp32, fixed summation order)
struct MoeUnpermuteBackwardParams {
  const float* grad_y = nullptr;             // [T, H]
  const float* y_sorted = nullptr;           // [M, H]; may be nullptr when grad_topk_weights is
  const int64_t* token_to_sorted = nullptr;  // [M]
  const float* topk_weights = nullptr;       // [T, K]; may be nullptr when grad_y_sorted is
  float* grad_y_sorted = nullptr;            // [M, H] out, may be nullptr (not needed)
  float* grad_topk_weights = nullptr;        // [T, K] out, may be nullptr (not needed)
  int64_t tokens = 0, topk = 0, hidden = 0;
};

void moe_permute_cpu(const MoePermuteParams& p);
void moe_permute_backward_cpu(const MoePermuteBackwardParams& p);
void moe_unpermute_cpu(const MoeUnpermuteParams& p);
void moe_unpermute_backward_cpu(const MoeUnpermuteBackwardParams& p);

// ---------------------------------------------------------------------------------------------
// Grouped GEMM over the contiguous expert segments (no alignment needed; empty experts allowed)
// ---------------------------------------------------------------------------------------------
// out[r, :] = x_sorted[r, :] @ w[e]^T for r in [expert_offsets[e], expert_offsets[e+1]).
struct MoeGroupedGemmParams {
  const float* x_sorted = nullptr;          // [M, H]
  const float* w = nullptr;                 // [E, N, H] (each expert's weight row-major, like nn.Linear)
  const int64_t* expert_offsets = nullptr;  // [E + 1] nondecreasing, [0] = 0, [E] = M
  float* out = nullptr;                     // [M, N] out
  int64_t rows = 0;                         // M
  int64_t out_features = 0;                 // N
  int64_t hidden = 0;                       // H
  int64_t experts = 0;                      // E
};

// Backward pieces, either output may be nullptr:
//   grad_x[rows of e] = grad_out[rows of e] @ w[e]                  (NN)
//   grad_w[e]         = grad_out[rows of e]^T @ x_sorted[rows of e] (TN; zeros for an empty expert)
struct MoeGroupedGemmBackwardParams {
  const float* grad_out = nullptr;          // [M, N]
  const float* x_sorted = nullptr;          // [M, H]; needed for grad_w
  const float* w = nullptr;                 // [E, N, H]; needed for grad_x
  const int64_t* expert_offsets = nullptr;  // [E + 1]
  float* grad_x = nullptr;                  // [M, H] out, may be nullptr
  float* grad_w = nullptr;                  // [E, N, H] out (overwritten), may be nullptr
  int64_t rows = 0, out_features = 0, hidden = 0, experts = 0;
};

// fp32 with FMA (kernels/cpu/gemm_f32.h) on tiles of each expert's product, spread over OpenMP
// threads so that one heavy expert does not serialize the rest. Each output element is summed in
// order over k: results do not depend on the number of threads.
void moe_grouped_gemm_cpu(const MoeGroupedGemmParams& p);
void moe_grouped_gemm_backward_cpu(const MoeGroupedGemmBackwardParams& p);

}  // namespace ts::kern

#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime_api.h>
namespace ts::kern {
// CUDA kernels with the same contracts. `bf16` selects bf16 storage for the activation/weight
// tensors (x, x_sorted, y, y_sorted, w, out and their gradients); topk_weights and
// grad_topk_weights stay fp32, index tensors int64; arithmetic is fp32.

// Routing on the GPU: validation + a stable radix sort (cub) of slots keyed by expert, so the
// three outputs are bitwise equal to moe_routing_cpu's. The status goes to device memory:
//   error[0] = flat slot of the first out-of-range id (or -1), error[1] = that id.
// With a bad id the other outputs are unspecified. Needs a caller-provided workspace of
// moe_routing_cuda_workspace(T, K, E) bytes (256-byte aligned, e.g. a torch uint8 tensor).
int64_t moe_routing_cuda_workspace(int64_t tokens, int64_t topk, int64_t experts);
void moe_routing_cuda(const MoeRoutingParams& p, int64_t* error, void* workspace, int64_t workspace_bytes,
                      cudaStream_t stream);

struct MoePermuteCudaParams {
  const void* x = nullptr;                   // [T, H]
  const int64_t* sorted_to_token = nullptr;  // [M]
  void* x_sorted = nullptr;                  // [M, H]
  int64_t tokens = 0, topk = 0, hidden = 0;
  bool bf16 = false;
};
struct MoePermuteBackwardCudaParams {
  const void* grad_x_sorted = nullptr;       // [M, H]
  const int64_t* token_to_sorted = nullptr;  // [M]
  void* grad_x = nullptr;                    // [T, H]
  int64_t tokens = 0, topk = 0, hidden = 0;
  bool bf16 = false;
};
struct MoeUnpermuteCudaParams {
  const void* y_sorted = nullptr;            // [M, H]
  const int64_t* token_to_sorted = nullptr;  // [M]
  const float* topk_weights = nullptr;       // [T, K]
  void* y = nullptr;                         // [T, H]
  int64_t tokens = 0, topk = 0, hidden = 0;
  bool bf16 = false;
};
struct MoeUnpermuteBackwardCudaParams {
  const void* grad_y = nullptr;              // [T, H]
  const void* y_sorted = nullptr;            // [M, H]; may be nullptr when grad_topk_weights is
  const int64_t* token_to_sorted = nullptr;  // [M]
  const float* topk_weights = nullptr;       // [T, K]; may be nullptr when grad_y_sorted is
  void* grad_y_sorted = nullptr;             // [M, H], may be nullptr
  float* grad_topk_weights = nullptr;        // [T, K], may be nullptr
  int64_t tokens = 0, topk = 0, hidden = 0;
  bool bf16 = false;
};
void moe_permute_cuda(const MoePermuteCudaParams& p, cudaStream_t stream);
void moe_permute_backward_cuda(const MoePermuteBackwardCudaParams& p, cudaStream_t stream);
void moe_unpermute_cuda(const MoeUnpermuteCudaParams& p, cudaStream_t stream);
void moe_unpermute_backward_cuda(const MoeUnpermuteBackwardCudaParams& p, cudaStream_t stream);

// Tiled shared-memory grouped GEMM (fp32 accumulation); each row tile reads expert_offsets on the
// device to find its expert, so no host synchronization is needed.
struct MoeGroupedGemmCudaParams {
  const void* x_sorted = nullptr;           // [M, H]
  const void* w = nullptr;                  // [E, N, H]
  const int64_t* expert_offsets = nullptr;  // [E + 1]
  void* out = nullptr;                      // [M, N]
  int64_t rows = 0, out_features = 0, hidden = 0, experts = 0;
  bool bf16 = false;
};
struct MoeGroupedGemmBackwardCudaParams {
  const void* grad_out = nullptr;           // [M, N]
  const void* x_sorted = nullptr;           // [M, H]; needed for grad_w
  const void* w = nullptr;                  // [E, N, H]; needed for grad_x
  const int64_t* expert_offsets = nullptr;  // [E + 1]
  void* grad_x = nullptr;                   // [M, H], may be nullptr
  void* grad_w = nullptr;                   // [E, N, H] (overwritten), may be nullptr
  int64_t rows = 0, out_features = 0, hidden = 0, experts = 0;
  bool bf16 = false;
};
void moe_grouped_gemm_cuda(const MoeGroupedGemmCudaParams& p, cudaStream_t stream);
void moe_grouped_gemm_backward_cuda(const MoeGroupedGemmBackwardCudaParams& p, cudaStream_t stream);
}  // namespace ts::kern
#endif
