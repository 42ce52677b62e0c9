// torch.ops.tinyseek.swiglu: argument checks, the C++ entry point, the Meta kernels and autograd.
// Backends: swiglu_cpu.cpp, swiglu_cuda.cpp.
#include "csrc/ops/swiglu.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/util/check.h"

namespace ts::ops {

void check_swiglu_args(const char* op, const at::Tensor& gate, const at::Tensor& up) {
  TS_CHECK_ARG(op, gate, gate.dim() >= 1, "expected at least 1 dimension, got a scalar");
  TS_CHECK_ARG(op, up, up.sym_sizes() == gate.sym_sizes(), "expected the shape of gate ", ::ts::shape_str(gate),
               ", got ", ::ts::shape_str(up));
  TS_CHECK_SAME_DEVICE(op, up, gate);
  TS_CHECK_ARG(op, gate, at::isFloatingType(gate.scalar_type()), "expected a floating dtype, got ", gate.scalar_type());
  TS_CHECK_ARG(op, up, up.scalar_type() == gate.scalar_type(), "expected the dtype of gate (", gate.scalar_type(),
               "), got ", up.scalar_type());
}

void check_swiglu_bwd_args(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up) {
  const char* op = "swiglu_bwd";
  check_swiglu_args(op, gate, up);
  TS_CHECK_ARG(op, grad_out, grad_out.sym_sizes() == gate.sym_sizes(), "expected the shape of gate ",
               ::ts::shape_str(gate), ", got ", ::ts::shape_str(grad_out));
  TS_CHECK_SAME_DEVICE(op, grad_out, gate);
  TS_CHECK_ARG(op, grad_out, grad_out.scalar_type() == gate.scalar_type(), "expected the dtype of gate (",
               gate.scalar_type(), "), got ", grad_out.scalar_type());
}

void check_swiglu_packed_args(const char* op, const at::Tensor& gate_up) {
  TS_CHECK_ARG(op, gate_up, gate_up.dim() >= 1 && gate_up.sym_size(-1) % 2 == 0,
               "expected [..., 2F] ([gate | up] along the last dim), got shape ", ::ts::shape_str(gate_up));
  TS_CHECK_ARG(op, gate_up, at::isFloatingType(gate_up.scalar_type()), "expected a floating dtype, got ",
               gate_up.scalar_type());
}

std::vector<c10::SymInt> swiglu_packed_shape(const at::Tensor& gate_up) {
  auto shape = gate_up.sym_sizes().vec();
  shape.back() = shape.back() / 2;
  return shape;
}

void check_swiglu_packed_bwd_args(const at::Tensor& grad_out, const at::Tensor& gate_up) {
  const char* op = "swiglu_packed_bwd";
  check_swiglu_packed_args(op, gate_up);
  TS_CHECK_ARG(op, grad_out, grad_out.sym_sizes() == c10::SymIntArrayRef(swiglu_packed_shape(gate_up)),
               "expected gate_up's shape with the last dim halved, got ", ::ts::shape_str(grad_out), " for gate_up ",
               ::ts::shape_str(gate_up));
  TS_CHECK_SAME_DEVICE(op, grad_out, gate_up);
  TS_CHECK_ARG(op, grad_out, grad_out.scalar_type() == gate_up.scalar_type(), "expected the dtype of gate_up (",
               gate_up.scalar_type(), "), got ", grad_out.scalar_type());
}

at::Tensor MetaKernels::swiglu_packed(const at::Tensor& gate_up) {
  check_swiglu_packed_args("swiglu_packed", gate_up);
  return at::empty_symint(swiglu_packed_shape(gate_up), gate_up.options());
}

at::Tensor MetaKernels::swiglu_packed_bwd(const at::Tensor& grad_out, const at::Tensor& gate_up) {
  check_swiglu_packed_bwd_args(grad_out, gate_up);
  return at::empty_symint(gate_up.sym_sizes(), gate_up.options());
}

Rows as_rows(const at::Tensor& x) {
  const int64_t F = x.size(-1);
  if (x.is_contiguous()) return {x, F};
  if (x.dim() == 2 && (x.stride(1) == 1 || F <= 1) && x.stride(0) >= F) return {x, x.stride(0)};
  return {x.contiguous(), F};
}

at::Tensor MetaKernels::swiglu(const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_args("swiglu", gate, up);
  return at::empty_symint(gate.sym_sizes(), gate.options().memory_format(at::MemoryFormat::Contiguous));
}

Tensor2 MetaKernels::swiglu_bwd(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_bwd_args(grad_out, gate, up);
  return empty_grads_like(gate, up);
}

namespace {

at::Tensor swiglu_call(const at::Tensor& gate, const at::Tensor& up) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::swiglu", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(gate, up);
}

Tensor2 swiglu_bwd_call(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::swiglu_bwd", "")
                       .typed<Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(grad_out, gate, up);
}

class SwigluFunction : public torch::autograd::Function<SwigluFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({gate, up});
    return swiglu_call(gate, up);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [gg, gu] = swiglu_bwd_call(grads[0], saved[0], saved[1]);
    return {gg, gu};
  }
};

at::Tensor swiglu_packed_call(const at::Tensor& gate_up) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::swiglu_packed", "")
                       .typed<at::Tensor(const at::Tensor&)>();
  return op.call(gate_up);
}

at::Tensor swiglu_packed_bwd_call(const at::Tensor& grad_out, const at::Tensor& gate_up) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::swiglu_packed_bwd", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(grad_out, gate_up);
}

class SwigluPackedFunction : public torch::autograd::Function<SwigluPackedFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate_up) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({gate_up});
    return swiglu_packed_call(gate_up);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {swiglu_packed_bwd_call(grads[0], ctx->get_saved_variables()[0])};
  }
};

at::Tensor swiglu_packed_autograd(const at::Tensor& gate_up) { return SwigluPackedFunction::apply(gate_up); }

at::Tensor swiglu_autograd(const at::Tensor& gate, const at::Tensor& up) { return SwigluFunction::apply(gate, up); }

}  // namespace

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) { return swiglu_call(gate, up); }
at::Tensor swiglu_packed(const at::Tensor& gate_up) { return swiglu_packed_call(gate_up); }

}  // namespace ts::ops

TORCH_LIBRARY_IMPL(tinyseek, Autograd, m) {
  m.impl("swiglu", &ts::ops::swiglu_autograd);
  m.impl("swiglu_packed", &ts::ops::swiglu_packed_autograd);
}
