// C++ entry point of torch.ops.tinyseek.skinny_linear: y = x W^T for the few rows of a KV-cached
// decoding step (kernel contract: kernels/skinny_gemm.h).
//   x [..., K] (any leading shape; rows = numel / K), weight [N, K] -> y [..., N] (dtype of x).
// Inference only (no autograd). CPU: fp32, the skinny GEMM, whose rows do not depend on each
// other; CUDA: torch's linear (cuBLAS), any floating dtype. nn::Linear uses it up to kSkinnyLinearRows rows
// (more work, but the general GEMM is faster there).
#pragma once

#include <ATen/ATen.h>

namespace ts::ops {

// Rows up to which the skinny kernel beats torch's linear on the CPU for the projections of the
// models in configs/ (build/tinyseek_bench --benchmark_filter=skinny_linear); nn::Linear takes it
// for inference steps up to this many rows.
constexpr int64_t kSkinnyLinearRows = 24;

at::Tensor skinny_linear(const at::Tensor& x, const at::Tensor& weight);

// Checks shared by every backend (sym sizes, so Meta tensors pass through too).
void check_skinny_linear_args(const at::Tensor& x, const at::Tensor& weight);

}  // namespace ts::ops
