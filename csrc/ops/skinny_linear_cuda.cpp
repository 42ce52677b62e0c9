// CUDA backend of torch.ops.tinyseek.skinny_linear: cuBLAS through torch's linear. On the GPU a
// decoding step is bound by kernel launches rather than by the shape of its GEMMs, and cuBLAS
// serves a few rows well, so there is no kernel of our own here (and no row-independence promise).
#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/skinny_linear.h"

namespace ts::ops {

at::Tensor CudaKernels::skinny_linear(const at::Tensor& x, const at::Tensor& weight) {
  check_skinny_linear_args(x, weight);
  return at::linear(x, weight);
}

}  // namespace ts::ops
