// CPU backend of torch.ops.tinyseek.swiglu: checks, allocation, then the torch-free kernel.
#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/swiglu.h"
#include "csrc/util/check.h"
#include "kernels/swiglu.h"

namespace ts::ops {

at::Tensor CpuKernels::swiglu(const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_args("swiglu", gate, up);
  TS_CHECK_DTYPE("swiglu", gate, at::kFloat);  // the CPU twin is fp32; bf16 is a CUDA path
  const auto g = as_rows(gate), u = as_rows(up);
  const int64_t F = gate.size(-1), R = F > 0 ? gate.numel() / F : 0;
  auto h = at::empty(gate.sizes(), gate.options().memory_format(at::MemoryFormat::Contiguous));
  kern::swiglu_forward_cpu({g.t.data_ptr<float>(), u.t.data_ptr<float>(), h.data_ptr<float>(), R, F, g.ld, u.ld, F});
  return h;
}

Tensor2 CpuKernels::swiglu_bwd(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_bwd_args(grad_out, gate, up);
  TS_CHECK_DTYPE("swiglu_bwd", gate, at::kFloat);
  const auto d = as_rows(grad_out), g = as_rows(gate), u = as_rows(up);
  const int64_t F = gate.size(-1), R = F > 0 ? gate.numel() / F : 0;
  const auto opts = gate.options().memory_format(at::MemoryFormat::Contiguous);
  auto gg = at::empty(gate.sizes(), opts), gu = at::empty(gate.sizes(), opts);
  kern::swiglu_backward_cpu({d.t.data_ptr<float>(), g.t.data_ptr<float>(), u.t.data_ptr<float>(), gg.data_ptr<float>(),
                             gu.data_ptr<float>(), R, F, d.ld, g.ld, u.ld, F, F});
  return {gg, gu};
}

at::Tensor CpuKernels::swiglu_packed(const at::Tensor& gate_up) {
  check_swiglu_packed_args("swiglu_packed", gate_up);
  TS_CHECK_DTYPE("swiglu_packed", gate_up, at::kFloat);
  const auto x = as_rows(gate_up);
  const int64_t F = gate_up.size(-1) / 2, R = F > 0 ? gate_up.numel() / (2 * F) : 0;
  auto h = at::empty(c10::asIntArrayRefUnchecked(swiglu_packed_shape(gate_up)), gate_up.options());
  const float* g = x.t.data_ptr<float>();
  kern::swiglu_forward_cpu({g, g + F, h.data_ptr<float>(), R, F, x.ld, x.ld, F});
  return h;
}

at::Tensor CpuKernels::swiglu_packed_bwd(const at::Tensor& grad_out, const at::Tensor& gate_up) {
  check_swiglu_packed_bwd_args(grad_out, gate_up);
  TS_CHECK_DTYPE("swiglu_packed_bwd", gate_up, at::kFloat);
  const auto d = as_rows(grad_out), x = as_rows(gate_up);
  const int64_t F = gate_up.size(-1) / 2, R = F > 0 ? gate_up.numel() / (2 * F) : 0;
  auto grad = at::empty(gate_up.sizes(), gate_up.options().memory_format(at::MemoryFormat::Contiguous));
  const float* g = x.t.data_ptr<float>();
  float* gg = grad.data_ptr<float>();
  kern::swiglu_backward_cpu({d.t.data_ptr<float>(), g, g + F, gg, gg + F, R, F, d.ld, x.ld, x.ld, 2 * F, 2 * F});
  return grad;
}

}  // namespace ts::ops
