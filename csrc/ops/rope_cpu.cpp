// CPU backend of torch.ops.tinyseek.rope: checks, allocation, then the torch-free kernel.
#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/rope.h"
#include "csrc/util/check.h"
#include "kernels/rope.h"

namespace ts::ops {

at::Tensor CpuKernels::rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
  check_rope_args(x, cos, sin);
  TS_CHECK_DTYPE("rope", x, at::kFloat);  // the CPU kernel is fp32
  auto xc = x.contiguous(), c = cos.contiguous(), s = sin.contiguous();
  auto y = at::empty_like(xc);
  kern::rope_cpu({xc.data_ptr<float>(), c.data_ptr<float>(), s.data_ptr<float>(), y.data_ptr<float>(), xc.size(0),
                  xc.size(1), xc.size(2), xc.size(3), cos.dim() == 3, inverse});
  return y;
}

}  // namespace ts::ops
