// CUDA twin of kernels/cpu/rms_norm.cpp. One block per row; fp32 arithmetic; fp32 or bf16 storage.
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/rms_norm.h"

namespace ts::kern {
namespace {

constexpr int kThreads = 256;

// Sum over the block; every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  __syncthreads();
  return total;
}

template <class T>
__global__ void rms_norm_fwd_kernel(const T* __restrict__ x, const float* __restrict__ w, T* __restrict__ y,
                                    float* __restrict__ rstd, int64_t D, float eps) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * D;
  T* yr = y + r * D;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < D; i += kThreads) {
    float v = load(xr, i);
    ss += v * v;
  }
  const float rs = rsqrtf(block_sum(ss) / D + eps);
  for (int64_t i = threadIdx.x; i < D; i += kThreads) store(yr, i, load(xr, i) * rs * w[i]);
  if (threadIdx.x == 0 && rstd) rstd[r] = rs;
}

// grad_x per row; per-row partial grad_weight terms go to workspace [R, D], reduced by a second kernel
// in a fixed order (deterministic, no atomics).
template <class T>
__global__ void rms_norm_bwd_kernel(const T* __restrict__ gy, const T* __restrict__ x, const float* __restrict__ w,
                                    const float* __restrict__ rstd, T* __restrict__ gx, float* __restrict__ ws,
                                    int64_t D) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * D;
  const T* gr = gy + r * D;
  const float rs = rstd[r];
  float dot = 0;
  for (int64_t i = threadIdx.x; i < D; i += kThreads) dot += load(gr, i) * w[i] * load(xr, i);
  const float coef = block_sum(dot) / D * rs * rs;
  for (int64_t i = threadIdx.x; i < D; i += kThreads) {
    const float xv = load(xr, i), gv = load(gr, i);
    store(gx + r * D, i, rs * (gv * w[i] - xv * coef));
    ws[r * D + i] = gv * xv * rs;
  }
}

__global__ void column_sum_kernel(const float* __restrict__ ws, float* __restrict__ out, int64_t R, int64_t D) {
  const int64_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= D) return;
  float s = 0;
  for (int64_t r = 0; r < R; ++r) s += ws[r * D + i];
  out[i] = s;
}

}  // namespace

void rms_norm_forward_cuda(const RmsNormCudaParams& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  if (p.bf16)
    rms_norm_fwd_kernel<<<p.rows, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(p.x), p.weight,
                                                         static_cast<__nv_bfloat16*>(p.y), p.rstd, p.dim, p.eps);
  else
    rms_norm_fwd_kernel<<<p.rows, kThreads, 0, stream>>>(static_cast<const float*>(p.x), p.weight,
                                                         static_cast<float*>(p.y), p.rstd, p.dim, p.eps);
  TS_CUDA_CHECK_LAUNCH();
}

int64_t rms_norm_backward_cuda_workspace(int64_t rows, int64_t dim) { return rows * dim; }

void rms_norm_backward_cuda(const RmsNormBackwardCudaParams& p, float* workspace, cudaStream_t stream) {
  if (p.rows > 0) {
    if (p.bf16)
      rms_norm_bwd_kernel<<<p.rows, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(p.grad_y),
                                                           static_cast<const __nv_bfloat16*>(p.x), p.weight, p.rstd,
                                                           static_cast<__nv_bfloat16*>(p.grad_x), workspace, p.dim);
    else
      rms_norm_bwd_kernel<<<p.rows, kThreads, 0, stream>>>(static_cast<const float*>(p.grad_y),
                                                           static_cast<const float*>(p.x), p.weight, p.rstd,
                                                           static_cast<float*>(p.grad_x), workspace, p.dim);
    TS_CUDA_CHECK_LAUNCH();
  }
  column_sum_kernel<<<(p.dim + 255) / 256, 256, 0, stream>>>(workspace, p.grad_weight, p.rows, p.dim);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace ts::kern
