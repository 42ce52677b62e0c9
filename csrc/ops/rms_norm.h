// C++ entry points for the rms_norm op family (they go through the dispatcher, so autograd, Meta and
// device dispatch apply exactly as for Python callers of torch.ops.tinyseek.rms_norm).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace ts::ops {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// Shared argument checks for every backend: x [..., D], weight [D], same device, same floating dtype family.
void check_rms_norm_args(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace ts::ops
