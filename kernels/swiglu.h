// Fused SwiGLU activation: h = silu(g) * u, element-wise over rows of width F, where
// silu(g) = g * sigmoid(g) = g / (1 + exp(-g)) (the gate g = W1 x, the up projection u = W3 x).
//
// Forward reads g and u once and writes h; the backward reads dh, g and u once and writes
//   dg = dh * u * s * (1 + g * (1 - s)),   du = dh * silu(g),   s = sigmoid(g),
// where the unfused composition (silu, mul, silu_backward, two muls) makes five passes over
// [R, F] and keeps silu(g) alive for the backward.
//
// Dimensions: R rows, F the width. g and u are rows with their own row strides (ld, in elements;
// a [R, 2F] buffer holding [g | u] is two strided views), each row contiguous; h, dg and du are
// written with their own row strides (F when contiguous).
//
// Non-finite values follow the float64 reference g / (1 + exp(-g)) and the formulas above:
// NaN anywhere in a row's element gives NaN there; silu(+inf) = +inf, silu(-inf) = NaN (as
// -inf / inf), and their derivatives are NaN (inf * 0). Arithmetic is fp32; sigmoid through a
// polynomial exp within a few ulp (kernels/cpu/vec_math.h), so results match the float64
// reference to a few fp32 ulp relative.
#pragma once

#include <cstdint>

namespace ts::kern {

struct SwigluParams {
  const float* gate = nullptr;  // [R, F] with row stride gate_ld
  const float* up = nullptr;    // [R, F] with row stride up_ld
  float* out = nullptr;         // [R, F] with row stride out_ld
  int64_t rows = 0, dim = 0;    // R, F
  int64_t gate_ld = 0, up_ld = 0, out_ld = 0;
};

struct SwigluBackwardParams {
  const float* grad_out = nullptr;  // [R, F] with row stride grad_out_ld
  const float* gate = nullptr;      // [R, F] with row stride gate_ld
  const float* up = nullptr;        // [R, F] with row stride up_ld
  float* grad_gate = nullptr;       // [R, F] with row stride grad_gate_ld
  float* grad_up = nullptr;         // [R, F] with row stride grad_up_ld
  int64_t rows = 0, dim = 0;
  int64_t grad_out_ld = 0, gate_ld = 0, up_ld = 0, grad_gate_ld = 0, grad_up_ld = 0;
};

// CPU twins, threaded over rows; every element is computed independently, so the result does not
// depend on the thread count.
void swiglu_forward_cpu(const SwigluParams& p);
void swiglu_backward_cpu(const SwigluBackwardParams& p);

}  // namespace ts::kern

#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime_api.h>
namespace ts::kern {
// CUDA kernels with the same contract; `bf16` selects bf16 storage for every tensor (fp32
// arithmetic; libdevice's expf instead of the CPU's polynomial, so fp32 results agree to a few ulp).
struct SwigluCudaParams {
  const void* gate = nullptr;
  const void* up = nullptr;
  void* out = nullptr;
  int64_t rows = 0, dim = 0, gate_ld = 0, up_ld = 0, out_ld = 0;
  bool bf16 = false;
};
struct SwigluBackwardCudaParams {
  const void* grad_out = nullptr;
  const void* gate = nullptr;
  const void* up = nullptr;
  void* grad_gate = nullptr;
  void* grad_up = nullptr;
  int64_t rows = 0, dim = 0, grad_out_ld = 0, gate_ld = 0, up_ld = 0, grad_gate_ld = 0, grad_up_ld = 0;
  bool bf16 = false;
};
void swiglu_forward_cuda(const SwigluCudaParams& p, cudaStream_t stream);
void swiglu_backward_cuda(const SwigluBackwardCudaParams& p, cudaStream_t stream);
}  // namespace ts::kern
#endif
