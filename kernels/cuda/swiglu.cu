// CUDA twin of kernels/cpu/swiglu.cpp: one thread per element, fp32 arithmetic, fp32 or bf16
// storage; sigmoid through exp(-|g|) as on the CPU (libdevice's expf).
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/swiglu.h"

namespace ts::kern {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float g) {
  const float e = expf(-fabsf(g));  // NaN stays NaN; the callers' products with g carry it anyway
  return (g >= 0.0f ? 1.0f : e) / (1.0f + e);
}

template <class T>
__global__ void swiglu_fwd_kernel(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ h, int64_t dim,
                                  int64_t g_ld, int64_t u_ld, int64_t h_ld, int64_t n) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= n) return;
  const int64_t r = k / dim, i = k % dim;
  const float gv = load(g, r * g_ld + i);
  store(h, r * h_ld + i, gv * sigmoid(gv) * load(u, r * u_ld + i));
}

template <class T>
__global__ void swiglu_bwd_kernel(const T* __restrict__ dh, const T* __restrict__ g, const T* __restrict__ u,
                                  T* __restrict__ dg, T* __restrict__ du, int64_t dim, int64_t dh_ld, int64_t g_ld,
                                  int64_t u_ld, int64_t dg_ld, int64_t du_ld, int64_t n) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= n) return;
  const int64_t r = k / dim, i = k % dim;
  const float gv = load(g, r * g_ld + i), uv = load(u, r * u_ld + i), d = load(dh, r * dh_ld + i);
  const float s = sigmoid(gv);
  store(dg, r * dg_ld + i, d * uv * (s * (1.0f + gv * (1.0f - s))));
  store(du, r * du_ld + i, d * (gv * s));
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

void swiglu_forward_cuda(const SwigluCudaParams& p, cudaStream_t stream) {
  const int64_t n = p.rows * p.dim;
  if (n == 0) return;
  if (p.bf16)
    swiglu_fwd_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(p.gate), static_cast<const __nv_bfloat16*>(p.up),
        static_cast<__nv_bfloat16*>(p.out), p.dim, p.gate_ld, p.up_ld, p.out_ld, n);
  else
    swiglu_fwd_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<const float*>(p.gate), static_cast<const float*>(p.up), static_cast<float*>(p.out), p.dim,
        p.gate_ld, p.up_ld, p.out_ld, n);
  TS_CUDA_CHECK_LAUNCH();
}

void swiglu_backward_cuda(const SwigluBackwardCudaParams& p, cudaStream_t stream) {
  const int64_t n = p.rows * p.dim;
  if (n == 0) return;
  if (p.bf16)
    swiglu_bwd_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(p.grad_out), static_cast<const __nv_bfloat16*>(p.gate),
        static_cast<const __nv_bfloat16*>(p.up), static_cast<__nv_bfloat16*>(p.grad_gate),
        static_cast<__nv_bfloat16*>(p.grad_up), p.dim, p.grad_out_ld, p.gate_ld, p.up_ld, p.grad_gate_ld, p.grad_up_ld,
        n);
  else
    swiglu_bwd_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<const float*>(p.grad_out), static_cast<const float*>(p.gate), static_cast<const float*>(p.up),
        static_cast<float*>(p.grad_gate), static_cast<float*>(p.grad_up), p.dim, p.grad_out_ld, p.gate_ld, p.up_ld,
        p.grad_gate_ld, p.grad_up_ld, n);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace ts::kern
