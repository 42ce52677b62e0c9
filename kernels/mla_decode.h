// MLA decode attention over a paged latent cache (FlashMLA layout).
//
// With the up-projections absorbed (DeepSeek-V2 §2.1), decode attention of MLA is MQA over the
// cached rows c_j = [latent ; rope key]: every query head h of sequence b scores every cached row
// with q·c_j (D_qk = d_c + d_R wide) and takes the first D_v columns of the same row (the latent)
// as the value. One cache row is therefore shared by all H heads, which is what makes the op
// memory-bound and why both kernels load a tile of rows once and use it for every head.
//
// Dimensions (named once for this area):
//   B    sequences in the batch            S_q  new query tokens per sequence
//   H    query heads                       D_qk query/key width (latent + rope, 576 in V2/V3)
//   D_v  value width: the first D_v columns of a cache row (the latent, 512 in V2/V3)
//   NB   blocks in the cache pool          BS   rows per cache block (block_size, 64 by default)
//   MB   block_table row length (max blocks per sequence)
//
// Semantics. L_b = seq_lens[b] counts every cached row of sequence b INCLUDING the S_q new
// tokens, which are already written. Cache position p of sequence b lives in row
// p % BS of block block_table[b][p / BS]. Query s (0-based among the S_q new tokens) attends
// causally to positions [0, L_b - S_q + s]:
//   out[b,s,h,:] = sum_p softmax_p(softmax_scale * q[b,s,h,:]·c_p) * c_p[0:D_v]
//   lse[b,h,s]   = log(sum_p exp(softmax_scale * q[b,s,h,:]·c_p))   (natural log)
// A query with nothing to attend (L_b - S_q + s < 0, which includes L_b == 0) gets out = 0 and lse
// = -inf, and so does a query whose visible scores are all -inf (nothing it can attend with a
// nonzero weight; the reference's softmax would divide 0 by 0 there). Non-finite values follow the
// float64 reference: a NaN score (a NaN in the query or in a cache row it sees) makes out and lse
// NaN; a +inf score makes out NaN and lse +inf; an inf value makes out inf or NaN where the
// reference's is; a row it does not see (a later query's position) leaves it alone. Both kernels
// implement these rules; the CPU twin is tested against them here, the CUDA kernel by CUDA tests
// that run where a GPU exists (not yet run on a GPU). Neither kernel reads a cache row at or past
// L_b, nor a block_table entry past ceil(L_b / BS) - 1, so unused slots and blocks may hold
// anything (tests fill them with NaN).
//
// Dtypes. The CPU twin takes fp32 or bf16 (q, kv_cache and out share one dtype); the CUDA kernel
// takes bf16 or fp16. Both accumulate in fp32; lse is always fp32. Any BS >= 1 works in both
// kernels (the op accepts multiples of 16, like FlashMLA); all tensors are contiguous.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace ts::kern {

// Element type of q, kv_cache and out (bf16 and fp16 are stored as raw uint16 bit patterns).
enum class MlaDtype : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

struct MlaDecodeParams {
  const void* q = nullptr;               // [B, S_q, H, D_qk], dtype
  const void* kv_cache = nullptr;        // [NB, BS, 1, D_qk], dtype; value = columns [0, D_v)
  const int32_t* block_table = nullptr;  // [B, MB], block ids in [0, NB)
  const int32_t* seq_lens = nullptr;     // [B], cached rows per sequence incl. the S_q new ones
  void* out = nullptr;                   // [B, S_q, H, D_v], dtype (written entirely)
  float* lse = nullptr;                  // [B, H, S_q], fp32 (written entirely)

  int64_t B = 0, S_q = 0, H = 0;
  int64_t D_qk = 0, D_v = 0;                               // D_qk >= D_v >= 1
  int64_t num_blocks = 0, block_size = 0, max_blocks = 0;  // NB, BS, MB
  float softmax_scale = 1.0f;
  MlaDtype dtype = MlaDtype::kFloat32;

  // CUDA only. num_splits: KV splits per sequence (0 = pick from the device's SM count; the
  // chosen value is what mla_decode_cuda_workspace_bytes sizes). workspace: device memory of
  // mla_decode_cuda_workspace_bytes(*this) bytes, 16-byte aligned; may be nullptr when that is 0.
  int num_splits = 0;
  void* workspace = nullptr;
};

// CPU twin (dtype kFloat32 or kBFloat16). Threads over sequences and, for long contexts, over
// KV splits that are merged by their (max, sum) afterwards (split-KV, as on the GPU).
void mla_decode_cpu(const MlaDecodeParams& p);

#if defined(TINYSEEK_WITH_CUDA)
// CUDA kernel (dtype kBFloat16 or kFloat16, sm_80 or newer). Restrictions beyond the contract,
// checked with std::invalid_argument: D_qk % 8 == 0; q and kv_cache 16-byte aligned; B <= 65535;
// the shared memory, 192 * round_up(D_qk, 16) + 9088 bytes (117 KiB at D_qk = 576), fits the
// device (D_qk up to 816 on A100, 1152 on H100/H200). Any D_v <= D_qk (512-column chunks).
// All pointers are device pointers. Asynchronous on `stream`; allocates nothing.
void mla_decode_cuda(const MlaDecodeParams& p, cudaStream_t stream);

// KV splits mla_decode_cuda will use for p (resolves num_splits == 0 for the current device).
int mla_decode_cuda_num_splits(const MlaDecodeParams& p);

// Bytes of fp32 partial results (per split: out and lse) mla_decode_cuda needs in p.workspace;
// 0 when it uses a single split.
size_t mla_decode_cuda_workspace_bytes(const MlaDecodeParams& p);
#endif

}  // namespace ts::kern
