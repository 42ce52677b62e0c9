// C++ entry point of torch.ops.tinyseek.rope: rotary embedding of x [B, T, H, D] by tables cos, sin
// [T, D/2] (every sequence at the same positions) or [B, T, D/2] (each at its own), fp32; inverse
// rotates by the negative angle (kernel contract: kernels/rope.h). Differentiable in x (the
// backward is the inverse rotation); the tables get no gradient. CPU: fp32; CUDA: fp32 or bf16.
#pragma once

#include <ATen/ATen.h>

namespace ts::ops {

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse = false);

// Checks shared by every backend (sym sizes, so Meta tensors pass through too).
void check_rope_args(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace ts::ops
