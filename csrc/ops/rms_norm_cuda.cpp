// CUDA backend of the rms_norm family (fp32 or bf16 activations; fp32 weight and rstd).
#include <c10/cuda/CUDAGuard.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/cuda_internal.h"
#include "csrc/ops/rms_norm.h"
#include "csrc/util/check.h"
#include "kernels/rms_norm.h"

namespace ts::ops {

Tensor2 CudaKernels::rms_norm_fwd(const at::Tensor& x_in, const at::Tensor& w_in, double eps) {
  check_rms_norm_args(x_in, w_in, eps);
  const bool bf16 = is_bf16("rms_norm", x_in);
  c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous(), w = w_in.contiguous();
  const int64_t D = x.size(-1), R = leading_rows(x).expect_int();
  auto y = at::empty_like(x);
  auto rstd = at::empty({R}, x.options().dtype(at::kFloat));
  kern::rms_norm_forward_cuda(
      {x.data_ptr(), w.data_ptr<float>(), y.data_ptr(), rstd.data_ptr<float>(), R, D, static_cast<float>(eps), bf16},
      current_stream());
  return {y, rstd};
}

Tensor2 CudaKernels::rms_norm_bwd(const at::Tensor& gy_in, const at::Tensor& x_in, const at::Tensor& w_in,
                                  const at::Tensor& rstd) {
  check_rms_norm_bwd_args(gy_in, x_in, w_in, rstd);
  const bool bf16 = is_bf16("rms_norm_bwd", x_in);
  c10::cuda::CUDAGuard guard(x_in.device());
  auto gy = gy_in.contiguous(), x = x_in.contiguous(), w = w_in.contiguous(), rs = rstd.contiguous();
  const int64_t D = x.size(-1), R = leading_rows(x).expect_int();
  auto gx = at::empty_like(x);
  auto gw = at::empty_like(w);
  auto ws = at::empty({kern::rms_norm_backward_cuda_workspace(R, D)}, w.options());
  kern::rms_norm_backward_cuda({gy.data_ptr(), x.data_ptr(), w.data_ptr<float>(), rs.data_ptr<float>(), gx.data_ptr(),
                                gw.data_ptr<float>(), R, D, bf16},
                               ws.data_ptr<float>(), current_stream());
  return {gx, gw};
}

}  // namespace ts::ops
