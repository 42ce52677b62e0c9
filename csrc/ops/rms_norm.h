// C++ entry points for the rms_norm op family (they go through the dispatcher, so autograd, Meta and
// device dispatch apply exactly as for Python callers of torch.ops.tinyseek.rms_norm).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace ts::ops {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// Shared argument checks for every backend: x [..., D], weight [D], same device, same floating dtype family.
void check_rms_norm_args(const at::Tensor& x, const at::Tensor& weight, double eps);
// The backward's: x [..., D], weight [D], grad_y like x, rstd [rows of x], one device, fp32 weight and rstd.
void check_rms_norm_bwd_args(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& rstd);
// Rows of x [..., D]: the product of its leading sizes (defined when D is 0).
c10::SymInt leading_rows(const at::Tensor& x);

}  // namespace ts::ops
