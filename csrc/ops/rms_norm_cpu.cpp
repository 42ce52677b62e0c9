// CPU backend of the rms_norm family: checks, allocation, then the torch-free kernel.
#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/rms_norm.h"
#include "csrc/util/check.h"
#include "kernels/rms_norm.h"

namespace ts::ops {

Tensor2 CpuKernels::rms_norm_fwd(const at::Tensor& x_in, const at::Tensor& w_in, double eps) {
  check_rms_norm_args(x_in, w_in, eps);
  TS_CHECK_DTYPE("rms_norm", x_in, at::kFloat);  // the CPU twin is fp32; bf16 is a CUDA path
  auto x = x_in.contiguous();
  auto w = w_in.contiguous();
  const int64_t D = x.size(-1), R = leading_rows(x).expect_int();
  auto y = at::empty_like(x);
  auto rstd = at::empty({R}, x.options());
  kern::rms_norm_forward_cpu({x.data_ptr<float>(), w.data_ptr<float>(), y.data_ptr<float>(), rstd.data_ptr<float>(), R,
                              D, static_cast<float>(eps)});
  return {y, rstd};
}

Tensor2 CpuKernels::rms_norm_bwd(const at::Tensor& gy_in, const at::Tensor& x_in, const at::Tensor& w_in,
                                 const at::Tensor& rstd) {
  check_rms_norm_bwd_args(gy_in, x_in, w_in, rstd);
  TS_CHECK_ARG("rms_norm_bwd", x, x_in.scalar_type() == at::kFloat, "expected dtype Float on CPU, got ",
               x_in.scalar_type());  // the CPU twin is fp32
  auto gy = gy_in.contiguous(), x = x_in.contiguous(), w = w_in.contiguous(), rs = rstd.contiguous();
  const int64_t D = x.size(-1), R = leading_rows(x).expect_int();
  auto gx = at::empty_like(x);
  auto gw = at::empty_like(w);
  kern::rms_norm_backward_cpu({gy.data_ptr<float>(), x.data_ptr<float>(), w.data_ptr<float>(), rs.data_ptr<float>(),
                               gx.data_ptr<float>(), gw.data_ptr<float>(), R, D});
  return {gx, gw};
}

}  // namespace ts::ops
