// torch.ops.tinyseek.skinny_linear: argument checks, the C++ entry point and the Meta kernel.
// Backends: skinny_linear_cpu.cpp, skinny_linear_cuda.cpp.
#include "csrc/ops/skinny_linear.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/util/check.h"

namespace ts::ops {

void check_skinny_linear_args(const at::Tensor& x, const at::Tensor& weight) {
  const char* op = "skinny_linear";
  TS_CHECK_ARG(op, x, x.dim() >= 1, "expected at least 1 dimension [..., K], got a scalar");
  TS_CHECK_DIM(op, weight, 2);
  TS_CHECK_ARG(op, weight, weight.sym_size(1) == x.sym_size(-1), "expected shape [N, ", x.sym_size(-1),
               "] (K = the last dim of x), got ", ::ts::shape_str(weight));
  TS_CHECK_SAME_DEVICE(op, weight, x);
  TS_CHECK_ARG(op, x, at::isFloatingType(x.scalar_type()), "expected a floating dtype, got ", x.scalar_type());
  TS_CHECK_ARG(op, weight, weight.scalar_type() == x.scalar_type(), "expected the dtype of x (", x.scalar_type(),
               "), got ", weight.scalar_type());
}

at::Tensor skinny_linear(const at::Tensor& x, const at::Tensor& weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::skinny_linear", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(x, weight);
}

at::Tensor MetaKernels::skinny_linear(const at::Tensor& x, const at::Tensor& weight) {
  check_skinny_linear_args(x, weight);
  auto sizes = x.sym_sizes().vec();
  sizes.back() = weight.sym_size(0);
  return at::empty_symint(sizes, x.options());
}

}  // namespace ts::ops
