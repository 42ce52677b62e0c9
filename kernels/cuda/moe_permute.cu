// CUDA twins of kernels/cpu/moe_permute.cpp: MoE permute / unpermute and their backward pieces,
// fp32 or bf16 storage, fp32 arithmetic. One warp per output row (or per token); each lane moves
// 16-byte packs when the row width and the pointers allow it, single elements otherwise.
#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>

#include "kernels/common.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/moe.h"

namespace ts::kern {
namespace {

constexpr int kWarps = 8;  // warps per block, one row (or token) each
constexpr int kThreads = 32 * kWarps;

// VEC elements of T moved as one aligned load/store (16 bytes when VEC = 16 / sizeof(T)).
template <class T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

__device__ __forceinline__ int64_t warp_row() { return blockIdx.x * int64_t{kWarps} + threadIdx.x / 32; }
__device__ __forceinline__ int lane() { return threadIdx.x % 32; }

unsigned blocks_for(int64_t rows) { return static_cast<unsigned>((rows + kWarps - 1) / kWarps); }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// x_sorted[r] = x[sorted_to_token[r] / K], row width `packs` packs of type P.
template <class P>
__global__ void permute_kernel(const P* __restrict__ x, const int64_t* __restrict__ sorted_to_token,
                               P* __restrict__ x_sorted, int64_t M, int64_t K, int64_t packs) {
  const int64_t r = warp_row();
  if (r >= M) return;
  const P* src = x + (sorted_to_token[r] / K) * packs;
  P* dst = x_sorted + r * packs;
  for (int64_t i = lane(); i < packs; i += 32) dst[i] = src[i];
}

// out[t] = sum_k w[t, k] * src[token_to_sorted[t*K + k]] (w = 1 when weights is nullptr), summed
// in order k in fp32; row width H = packs * VEC elements.
template <class T, int VEC>
__global__ void gather_sum_kernel(const T* __restrict__ src, const int64_t* __restrict__ token_to_sorted,
                                  const float* __restrict__ weights, T* __restrict__ out, int64_t T_, int64_t K,
                                  int64_t packs) {
  using P = Pack<T, VEC>;
  const int64_t t = warp_row();
  if (t >= T_) return;
  const P* s = reinterpret_cast<const P*>(src);
  P* o = reinterpret_cast<P*>(out) + t * packs;
  for (int64_t i = lane(); i < packs; i += 32) {
    float acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t slot = t * K + k;
      const float w = weights ? weights[slot] : 1.0f;
      const P v = s[token_to_sorted[slot] * packs + i];
#pragma unroll
      for (int j = 0; j < VEC; ++j) acc[j] += w * to_float(v.v[j]);
    }
    P res;
#pragma unroll
    for (int j = 0; j < VEC; ++j) res.v[j] = from_float<T>(acc[j]);
    o[i] = res;
  }
}

// For each slot s = t*K + k, r = token_to_sorted[s]: grad_y_sorted[r] = w[s] * grad_y[t] and
// grad_w[s] = dot(grad_y[t], y_sorted[r]) (per-lane partial sums, then a fixed shuffle tree).
template <class T, int VEC>
__global__ void unpermute_backward_kernel(const T* __restrict__ grad_y, const T* __restrict__ y_sorted,
                                          const int64_t* __restrict__ token_to_sorted,
                                          const float* __restrict__ weights, T* __restrict__ grad_y_sorted,
                                          float* __restrict__ grad_w, int64_t T_, int64_t K, int64_t packs) {
  using P = Pack<T, VEC>;
  const int64_t t = warp_row();
  if (t >= T_) return;
  const P* gy = reinterpret_cast<const P*>(grad_y) + t * packs;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t slot = t * K + k, r = token_to_sorted[slot];
    const float w = grad_y_sorted ? weights[slot] : 0.0f;
    float dot = 0.0f;
    for (int64_t i = lane(); i < packs; i += 32) {
      const P g = gy[i];
      if (grad_y_sorted) {
        P res;
#pragma unroll
        for (int j = 0; j < VEC; ++j) res.v[j] = from_float<T>(w * to_float(g.v[j]));
        reinterpret_cast<P*>(grad_y_sorted)[r * packs + i] = res;
      }
      if (grad_w) {
        const P y = reinterpret_cast<const P*>(y_sorted)[r * packs + i];
#pragma unroll
        for (int j = 0; j < VEC; ++j) dot += to_float(g.v[j]) * to_float(y.v[j]);
      }
    }
    if (grad_w) {
      for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      if (lane() == 0) grad_w[slot] = dot;
    }
  }
}

// 16-byte packs when every row start is 16-byte aligned, single elements otherwise.
template <class T>
bool use_packs(int64_t H, std::initializer_list<const void*> ptrs) {
  if ((H * int64_t{sizeof(T)}) % 16 != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned16(p)) return false;
  return true;
}

template <class T>
void gather_sum(const void* src, const int64_t* token_to_sorted, const float* weights, void* out, int64_t T_, int64_t K,
                int64_t H, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const T* s = static_cast<const T*>(src);
  T* o = static_cast<T*>(out);
  if (use_packs<T>(H, {src, out}))
    gather_sum_kernel<T, kVec>
        <<<blocks_for(T_), kThreads, 0, stream>>>(s, token_to_sorted, weights, o, T_, K, H / kVec);
  else
    gather_sum_kernel<T, 1><<<blocks_for(T_), kThreads, 0, stream>>>(s, token_to_sorted, weights, o, T_, K, H);
  TS_CUDA_CHECK_LAUNCH();
}

template <class T>
void unpermute_backward(const MoeUnpermuteBackwardCudaParams& p, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const auto* gy = static_cast<const T*>(p.grad_y);
  const auto* ys = static_cast<const T*>(p.y_sorted);
  auto* gys = static_cast<T*>(p.grad_y_sorted);
  const unsigned blocks = blocks_for(p.tokens);
  if (use_packs<T>(p.hidden, {p.grad_y, p.y_sorted, p.grad_y_sorted}))
    unpermute_backward_kernel<T, kVec><<<blocks, kThreads, 0, stream>>>(
        gy, ys, p.token_to_sorted, p.topk_weights, gys, p.grad_topk_weights, p.tokens, p.topk, p.hidden / kVec);
  else
    unpermute_backward_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(gy, ys, p.token_to_sorted, p.topk_weights, gys,
                                                                     p.grad_topk_weights, p.tokens, p.topk, p.hidden);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace

void moe_permute_cuda(const MoePermuteCudaParams& p, cudaStream_t stream) {
  const int64_t M = p.tokens * p.topk, elt = p.bf16 ? 2 : 4, row_bytes = p.hidden * elt;
  if (M == 0 || p.hidden == 0) return;
  // A pure copy: the element type only matters for the row width in bytes.
  if (row_bytes % 16 == 0 && aligned16(p.x) && aligned16(p.x_sorted))
    permute_kernel<<<blocks_for(M), kThreads, 0, stream>>>(static_cast<const uint4*>(p.x), p.sorted_to_token,
                                                           static_cast<uint4*>(p.x_sorted), M, p.topk, row_bytes / 16);
  else if (p.bf16)
    permute_kernel<<<blocks_for(M), kThreads, 0, stream>>>(static_cast<const uint16_t*>(p.x), p.sorted_to_token,
                                                           static_cast<uint16_t*>(p.x_sorted), M, p.topk, p.hidden);
  else
    permute_kernel<<<blocks_for(M), kThreads, 0, stream>>>(static_cast<const uint32_t*>(p.x), p.sorted_to_token,
                                                           static_cast<uint32_t*>(p.x_sorted), M, p.topk, p.hidden);
  TS_CUDA_CHECK_LAUNCH();
}

void moe_permute_backward_cuda(const MoePermuteBackwardCudaParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.hidden == 0) return;
  if (p.bf16)
    gather_sum<__nv_bfloat16>(p.grad_x_sorted, p.token_to_sorted, nullptr, p.grad_x, p.tokens, p.topk, p.hidden,
                              stream);
  else
    gather_sum<float>(p.grad_x_sorted, p.token_to_sorted, nullptr, p.grad_x, p.tokens, p.topk, p.hidden, stream);
}

void moe_unpermute_cuda(const MoeUnpermuteCudaParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.hidden == 0) return;
  TS_KERNEL_ASSERT(p.topk == 0 || p.topk_weights != nullptr);
  if (p.bf16)
    gather_sum<__nv_bfloat16>(p.y_sorted, p.token_to_sorted, p.topk_weights, p.y, p.tokens, p.topk, p.hidden, stream);
  else
    gather_sum<float>(p.y_sorted, p.token_to_sorted, p.topk_weights, p.y, p.tokens, p.topk, p.hidden, stream);
}

void moe_unpermute_backward_cuda(const MoeUnpermuteBackwardCudaParams& p, cudaStream_t stream) {
  if (p.tokens * p.topk == 0) return;
  if (!p.grad_y_sorted && !p.grad_topk_weights) return;
  TS_KERNEL_ASSERT(!p.grad_y_sorted || p.topk_weights);
  TS_KERNEL_ASSERT(!p.grad_topk_weights || p.y_sorted);
  if (p.bf16)
    unpermute_backward<__nv_bfloat16>(p, stream);
  else
    unpermute_backward<float>(p, stream);
}

}  // namespace ts::kern
