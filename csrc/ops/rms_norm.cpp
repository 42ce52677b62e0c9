#include "csrc/ops/rms_norm.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/util/check.h"

namespace ts::ops {

c10::SymInt leading_rows(const at::Tensor& x) {
  c10::SymInt rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows = rows * x.sym_size(d);
  return rows;
}

void check_rms_norm_args(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const char* op = "rms_norm";
  TS_CHECK_ARG(op, x, x.dim() >= 1, "expected at least 1 dimension, got a scalar");
  TS_CHECK_DIM(op, weight, 1);
  TS_CHECK_ARG(op, weight, weight.sym_size(0) == x.sym_size(-1), "expected shape [", x.sym_size(-1),
               "] (the last dim of x), got ", ::ts::shape_str(weight));
  TS_CHECK_SAME_DEVICE(op, weight, x);
  TS_CHECK_ARG(op, x, at::isFloatingType(x.scalar_type()), "expected a floating dtype, got ", x.scalar_type());
  TS_CHECK_DTYPE(op, weight, at::kFloat);
  TS_CHECK_ARG(op, eps, eps > 0, "expected eps > 0, got ", eps);
}

void check_rms_norm_bwd_args(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& rstd) {
  const char* op = "rms_norm_bwd";
  TS_CHECK_ARG(op, x, x.dim() >= 1, "expected at least 1 dimension, got a scalar");
  TS_CHECK_ARG(op, weight, weight.dim() == 1 && weight.sym_size(0) == x.sym_size(-1), "expected shape [",
               x.sym_size(-1), "] (the last dim of x), got ", ::ts::shape_str(weight));
  TS_CHECK_ARG(op, grad_y, grad_y.sym_sizes() == x.sym_sizes(), "expected the shape of x ", ::ts::shape_str(x),
               ", got ", ::ts::shape_str(grad_y));
  TS_CHECK_ARG(op, rstd, rstd.dim() == 1 && rstd.sym_numel() == leading_rows(x), "expected shape [", leading_rows(x),
               "] (one per row of x), got ", ::ts::shape_str(rstd));
  TS_CHECK_SAME_DEVICE(op, weight, x);
  TS_CHECK_SAME_DEVICE(op, grad_y, x);
  TS_CHECK_SAME_DEVICE(op, rstd, x);
  TS_CHECK_ARG(op, grad_y, grad_y.scalar_type() == x.scalar_type(), "expected the dtype of x (", x.scalar_type(),
               "), got ", grad_y.scalar_type());
  TS_CHECK_DTYPE(op, weight, at::kFloat);
  TS_CHECK_DTYPE(op, rstd, at::kFloat);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("tinyseek::rms_norm", "").typed<decltype(rms_norm)>();
  return op.call(x, weight, eps);
}

namespace {

std::tuple<at::Tensor, at::Tensor> rms_norm_fwd_call(const at::Tensor& x, const at::Tensor& w, double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::rms_norm_fwd", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double)>();
  return op.call(x, w, eps);
}

std::tuple<at::Tensor, at::Tensor> rms_norm_bwd_call(const at::Tensor& gy, const at::Tensor& x, const at::Tensor& w,
                                                     const at::Tensor& rstd) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::rms_norm_bwd", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, const at::Tensor&)>();
  return op.call(gy, x, w, rstd);
}

// Any backend (CPU, CUDA, Meta): the forward kernel's first output.
at::Tensor rms_norm_composite(const at::Tensor& x, const at::Tensor& w, double eps) {
  return std::get<0>(rms_norm_fwd_call(x, w, eps));
}

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, rstd] = rms_norm_fwd_call(x, w, eps);
    ctx->save_for_backward({x, w, rstd});
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [gx, gw] = rms_norm_bwd_call(grads[0].contiguous(), saved[0], saved[1], saved[2]);
    return {gx, gw, at::Tensor()};
  }
};

at::Tensor rms_norm_autograd(const at::Tensor& x, const at::Tensor& w, double eps) {
  return RmsNormFunction::apply(x, w, eps);
}

}  // namespace

// Shapes only: y like x, rstd [rows] fp32, grads like their inputs.
Tensor2 MetaKernels::rms_norm_fwd(const at::Tensor& x, const at::Tensor& w, double eps) {
  check_rms_norm_args(x, w, eps);
  auto rows = leading_rows(x);  // not numel / D: D may be 0
  return {at::empty_symint(x.sym_sizes(), x.options()), at::empty_symint({rows}, x.options().dtype(at::kFloat))};
}

Tensor2 MetaKernels::rms_norm_bwd(const at::Tensor& gy, const at::Tensor& x, const at::Tensor& w,
                                  const at::Tensor& rstd) {
  check_rms_norm_bwd_args(gy, x, w, rstd);
  return empty_grads_like(x, w);
}

}  // namespace ts::ops

TORCH_LIBRARY_IMPL(tinyseek, CompositeExplicitAutograd, m) { m.impl("rms_norm", &ts::ops::rms_norm_composite); }
TORCH_LIBRARY_IMPL(tinyseek, Autograd, m) { m.impl("rms_norm", &ts::ops::rms_norm_autograd); }
