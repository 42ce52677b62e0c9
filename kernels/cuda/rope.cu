// CUDA twin of kernels/cpu/rope.cpp: one thread per pair; fp32 arithmetic with the products
// rounded before their sums (__fmul_rn), as the CPU twin; fp32 or bf16 storage.
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/rope.h"

namespace ts::kern {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void rope_kernel(const T* __restrict__ x, const float* __restrict__ cos, const float* __restrict__ sin, T* y,
                            int64_t seq, int64_t heads, int64_t half, bool per_sequence, float sign, int64_t pairs) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= pairs) return;
  const int64_t i = k % half, row = k / half / heads;  // row = b * seq + t
  const int64_t b = row / seq, t = row % seq;
  const int64_t table = ((per_sequence ? b * seq : 0) + t) * half + i;
  const float c = cos[table], s = sign * sin[table];
  const float x0 = load(x, 2 * k), x1 = load(x, 2 * k + 1);
  store(y, 2 * k, __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s)));
  store(y, 2 * k + 1, __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c)));
}

}  // namespace

void rope_cuda(const RopeCudaParams& p, cudaStream_t stream) {
  const int64_t half = p.dim / 2, pairs = p.batch * p.seq * p.heads * half;
  if (pairs == 0) return;
  const auto blocks = static_cast<unsigned>((pairs + kThreads - 1) / kThreads);
  const float sign = p.inverse ? -1.0f : 1.0f;
  if (p.bf16)
    rope_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(p.x), p.cos, p.sin,
                                                 static_cast<__nv_bfloat16*>(p.y), p.seq, p.heads, half, p.per_sequence,
                                                 sign, pairs);
  else
    rope_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const float*>(p.x), p.cos, p.sin, static_cast<float*>(p.y),
                                                 p.seq, p.heads, half, p.per_sequence, sign, pairs);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace ts::kern
