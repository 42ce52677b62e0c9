// Every tinyseek op's schema, in one place. Backends register in csrc/ops/<op>_{cpu,cuda,meta,autograd}.cpp.
#include <torch/library.h>

TORCH_LIBRARY(tinyseek, m) {
  // RMSNorm over the last dim. Returns y and the per-row rstd the backward reuses.
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("rms_norm_fwd(Tensor x, Tensor weight, float eps) -> (Tensor y, Tensor rstd)");
  m.def("rms_norm_bwd(Tensor grad_y, Tensor x, Tensor weight, Tensor rstd) -> (Tensor grad_x, Tensor grad_weight)");
}
