// torch.ops.tinyseek.rope: argument checks, the C++ entry point, the Meta kernel and autograd.
// Backends: rope_cpu.cpp, rope_cuda.cpp.
#include "csrc/ops/rope.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/util/check.h"

namespace ts::ops {

void check_rope_args(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const char* op = "rope";
  TS_CHECK_DIM(op, x, 4);
  TS_CHECK_ARG(op, x, x.sym_size(3) % 2 == 0, "expected an even head dim D (dim 3), got shape ", ::ts::shape_str(x));
  TS_CHECK_ARG(op, x, at::isFloatingType(x.scalar_type()), "expected a floating dtype, got ", x.scalar_type());
  for (const auto* t : {&cos, &sin}) {
    const char* name = t == &cos ? "cos" : "sin";
    TORCH_CHECK(t->dim() == 2 || t->dim() == 3, "tinyseek.rope: argument '", name,
                "': expected [T, D/2] or [B, T, D/2], got shape ", ::ts::shape_str(*t));
    const bool per_seq = t->dim() == 3;
    TORCH_CHECK((!per_seq || t->sym_size(0) == x.sym_size(0)) && t->sym_size(-2) == x.sym_size(1) &&
                    t->sym_size(-1) * 2 == x.sym_size(3),
                "tinyseek.rope: argument '", name, "': expected shape [", per_seq ? "B, " : "", "T, D/2] = [",
                per_seq ? std::to_string(x.size(0)) + ", " : std::string(), x.sym_size(1), ", ", x.sym_size(3) / 2,
                "] for x of shape ", ::ts::shape_str(x), ", got ", ::ts::shape_str(*t));
    TORCH_CHECK(t->scalar_type() == at::kFloat, "tinyseek.rope: argument '", name, "': expected dtype Float, got ",
                t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), "tinyseek.rope: argument '", name, "': expected device ", x.device(),
                " (same as 'x'), got ", t->device());
  }
  TS_CHECK_ARG(op, sin, sin.dim() == cos.dim(), "expected the shape of cos ", ::ts::shape_str(cos), ", got ",
               ::ts::shape_str(sin));
}

at::Tensor MetaKernels::rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool) {
  check_rope_args(x, cos, sin);
  return at::empty_symint(x.sym_sizes(), x.options());
}

namespace {

at::Tensor rope_call(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::rope", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool)>();
  return op.call(x, cos, sin, inverse);
}

class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin, bool inverse) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["inverse"] = inverse;
    return rope_call(x, cos, sin, inverse);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const bool inverse = ctx->saved_data["inverse"].toBool();
    // The rotation is orthogonal: its transpose is the inverse rotation.
    return {rope_call(grads[0].contiguous(), saved[0], saved[1], !inverse), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor rope_autograd(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
  return RopeFunction::apply(x, cos, sin, inverse);
}

}  // namespace

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
  return rope_call(x, cos, sin, inverse);
}

TORCH_LIBRARY_IMPL(tinyseek, Autograd, m) { m.impl("rope", &rope_autograd); }

}  // namespace ts::ops
