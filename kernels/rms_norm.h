// Fused RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight, over the last dimension.
//
// Dimensions: R rows (every leading dimension flattened), D the normalized width.
// Forward also writes rstd (1/sqrt(mean(x^2)+eps) per row, fp32), which the backward reuses.
#pragma once

#include <cstdint>

namespace ts::kern {

struct RmsNormParams {
  const float* x = nullptr;       // [R, D]
  const float* weight = nullptr;  // [D]
  float* y = nullptr;             // [R, D]
  float* rstd = nullptr;          // [R]
  int64_t rows = 0;               // R
  int64_t dim = 0;                // D
  float eps = 1e-6f;
};

struct RmsNormBackwardParams {
  const float* grad_y = nullptr;  // [R, D]
  const float* x = nullptr;       // [R, D]
  const float* weight = nullptr;  // [D]
  const float* rstd = nullptr;    // [R], from the forward
  float* grad_x = nullptr;        // [R, D]
  float* grad_weight = nullptr;   // [D], overwritten (not accumulated)
  int64_t rows = 0;
  int64_t dim = 0;
};

// CPU twins (threaded over rows; grad_weight reduced per thread then summed in a fixed order,
// so results are deterministic for a given thread count).
void rms_norm_forward_cpu(const RmsNormParams& p);
void rms_norm_backward_cpu(const RmsNormBackwardParams& p);

}  // namespace ts::kern

#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime_api.h>
namespace ts::kern {
// CUDA kernels with the same contract. `dtype_bf16` selects bf16 storage for x, y, grad_y and
// grad_x (weight, rstd and grad_weight stay fp32); arithmetic is fp32.
struct RmsNormCudaParams {
  const void* x = nullptr;        // [R, D] fp32 or bf16
  const float* weight = nullptr;  // [D]
  void* y = nullptr;              // [R, D] same dtype as x
  float* rstd = nullptr;          // [R]
  int64_t rows = 0, dim = 0;
  float eps = 1e-6f;
  bool bf16 = false;
};
struct RmsNormBackwardCudaParams {
  const void* grad_y = nullptr;   // [R, D]
  const void* x = nullptr;        // [R, D]
  const float* weight = nullptr;  // [D]
  const float* rstd = nullptr;    // [R]
  void* grad_x = nullptr;         // [R, D]
  float* grad_weight = nullptr;   // [D]
  int64_t rows = 0, dim = 0;
  bool bf16 = false;
};
void rms_norm_forward_cuda(const RmsNormCudaParams& p, cudaStream_t stream);
// Needs a caller-provided fp32 workspace of rms_norm_backward_cuda_workspace(rows, dim) floats.
int64_t rms_norm_backward_cuda_workspace(int64_t rows, int64_t dim);
void rms_norm_backward_cuda(const RmsNormBackwardCudaParams& p, float* workspace, cudaStream_t stream);
}  // namespace ts::kern
#endif
