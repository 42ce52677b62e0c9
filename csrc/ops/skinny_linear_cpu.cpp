// CPU backend of torch.ops.tinyseek.skinny_linear: checks, allocation, then the torch-free kernel.
#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/skinny_linear.h"
#include "csrc/util/check.h"
#include "kernels/skinny_gemm.h"

namespace ts::ops {

at::Tensor CpuKernels::skinny_linear(const at::Tensor& x, const at::Tensor& weight) {
  check_skinny_linear_args(x, weight);
  TS_CHECK_DTYPE("skinny_linear", x, at::kFloat);  // the CPU kernel is fp32
  auto xc = x.contiguous();
  auto w = weight.contiguous();
  const int64_t K = xc.size(-1), N = w.size(0);
  auto sizes = xc.sizes().vec();
  sizes.back() = N;
  auto y = at::empty(sizes, xc.options());
  if (y.numel() == 0) return y;
  if (K == 0) return y.zero_();  // empty sums
  kern::skinny_gemm_cpu({xc.data_ptr<float>(), K, w.data_ptr<float>(), y.data_ptr<float>(), N, xc.numel() / K, N, K});
  return y;
}

}  // namespace ts::ops
