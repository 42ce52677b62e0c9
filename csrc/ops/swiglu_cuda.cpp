// CUDA backend of torch.ops.tinyseek.swiglu (fp32 or bf16).
#include <c10/cuda/CUDAGuard.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/cuda_internal.h"
#include "csrc/ops/swiglu.h"
#include "csrc/util/check.h"
#include "kernels/swiglu.h"

namespace ts::ops {

at::Tensor CudaKernels::swiglu(const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_args("swiglu", gate, up);
  const bool bf16 = is_bf16("swiglu", gate);
  c10::cuda::CUDAGuard guard(gate.device());
  const auto g = as_rows(gate), u = as_rows(up);
  const int64_t F = gate.size(-1), R = F > 0 ? gate.numel() / F : 0;
  auto h = at::empty(gate.sizes(), gate.options().memory_format(at::MemoryFormat::Contiguous));
  kern::swiglu_forward_cuda({g.t.data_ptr(), u.t.data_ptr(), h.data_ptr(), R, F, g.ld, u.ld, F, bf16},
                            current_stream());
  return h;
}

Tensor2 CudaKernels::swiglu_bwd(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_bwd_args(grad_out, gate, up);
  const bool bf16 = is_bf16("swiglu_bwd", gate);
  c10::cuda::CUDAGuard guard(gate.device());
  const auto d = as_rows(grad_out), g = as_rows(gate), u = as_rows(up);
  const int64_t F = gate.size(-1), R = F > 0 ? gate.numel() / F : 0;
  const auto opts = gate.options().memory_format(at::MemoryFormat::Contiguous);
  auto gg = at::empty(gate.sizes(), opts), gu = at::empty(gate.sizes(), opts);
  kern::swiglu_backward_cuda({d.t.data_ptr(), g.t.data_ptr(), u.t.data_ptr(), gg.data_ptr(), gu.data_ptr(), R, F, d.ld,
                              g.ld, u.ld, F, F, bf16},
                             current_stream());
  return {gg, gu};
}

at::Tensor CudaKernels::swiglu_packed(const at::Tensor& gate_up) {
  check_swiglu_packed_args("swiglu_packed", gate_up);
  const bool bf16 = is_bf16("swiglu_packed", gate_up);
  c10::cuda::CUDAGuard guard(gate_up.device());
  const auto x = as_rows(gate_up);
  const int64_t F = gate_up.size(-1) / 2, R = F > 0 ? gate_up.numel() / (2 * F) : 0;
  auto h = at::empty(c10::asIntArrayRefUnchecked(swiglu_packed_shape(gate_up)), gate_up.options());
  auto* g = static_cast<const char*>(x.t.data_ptr());
  kern::swiglu_forward_cuda({g, g + F * x.t.element_size(), h.data_ptr(), R, F, x.ld, x.ld, F, bf16}, current_stream());
  return h;
}

at::Tensor CudaKernels::swiglu_packed_bwd(const at::Tensor& grad_out, const at::Tensor& gate_up) {
  check_swiglu_packed_bwd_args(grad_out, gate_up);
  const bool bf16 = is_bf16("swiglu_packed_bwd", gate_up);
  c10::cuda::CUDAGuard guard(gate_up.device());
  const auto d = as_rows(grad_out), x = as_rows(gate_up);
  const int64_t F = gate_up.size(-1) / 2, R = F > 0 ? gate_up.numel() / (2 * F) : 0;
  auto grad = at::empty(gate_up.sizes(), gate_up.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t es = gate_up.element_size();
  auto* g = static_cast<const char*>(x.t.data_ptr());
  auto* gg = static_cast<char*>(grad.data_ptr());
  kern::swiglu_backward_cuda(
      {d.t.data_ptr(), g, g + F * es, gg, gg + F * es, R, F, d.ld, x.ld, x.ld, 2 * F, 2 * F, bf16}, current_stream());
  return grad;
}

}  // namespace ts::ops
