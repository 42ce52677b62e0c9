// CUDA backend of torch.ops.tinyseek.rope (fp32 or bf16 activations, fp32 tables).
#include <c10/cuda/CUDAGuard.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/cuda_internal.h"
#include "csrc/ops/rope.h"
#include "kernels/rope.h"

namespace ts::ops {

at::Tensor CudaKernels::rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
  check_rope_args(x, cos, sin);
  const bool bf16 = is_bf16("rope", x);
  c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous(), c = cos.contiguous(), s = sin.contiguous();
  auto y = at::empty_like(xc);
  kern::rope_cuda({xc.data_ptr(), c.data_ptr<float>(), s.data_ptr<float>(), y.data_ptr(), xc.size(0), xc.size(1),
                   xc.size(2), xc.size(3), cos.dim() == 3, inverse, bf16},
                  current_stream());
  return y;
}

}  // namespace ts::ops
