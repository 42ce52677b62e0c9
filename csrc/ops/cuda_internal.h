// Helpers shared by the CUDA backends (csrc/ops/*_cuda.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "csrc/util/check.h"

namespace ts::ops {

// The activation dtypes of the CUDA kernels that take fp32 or bf16 storage (rms_norm, MoE):
// checks x is one of them and tells which.
inline bool is_bf16(const char* op, const at::Tensor& x) {
  TS_CHECK_ARG(op, x, x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
               "expected float32 or bfloat16 on CUDA, got ", x.scalar_type());
  return x.scalar_type() == at::kBFloat16;
}

// The stream kernels run on: the current one of the device the caller's CUDAGuard selected.
inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream(); }

}  // namespace ts::ops
