// torch.ops.tinyseek.decode_attention: argument checks, the C++ entry point and the Meta kernel.
// Backends: decode_attention_cpu.cpp, decode_attention_cuda.cpp.
#include "csrc/ops/decode_attention.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/util/check.h"

namespace ts::ops {

void check_decode_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& last) {
  const char* op = "decode_attention";
  TS_CHECK_DIM(op, q, 4);
  TS_CHECK_DIM(op, k, 4);
  TS_CHECK_DIM(op, v, 4);
  TS_CHECK_DIM(op, last, 2);
  TS_CHECK_ARG(op, k, k.sym_size(0) == q.sym_size(0) && k.sym_size(3) == q.sym_size(3) && k.sym_size(1) > 0,
               "expected [B, L, Hk, D] = [", q.sym_size(0), ", L >= 1, Hk, ", q.sym_size(3), "] for q of shape ",
               ::ts::shape_str(q), ", got ", ::ts::shape_str(k));
  TS_CHECK_ARG(op, k, k.sym_size(2) > 0 && q.sym_size(2) % k.sym_size(2) == 0,
               "expected Hk (dim 2) to divide H = ", q.sym_size(2), ", got shape ", ::ts::shape_str(k));
  TS_CHECK_ARG(op, v,
               v.sym_size(0) == k.sym_size(0) && v.sym_size(1) == k.sym_size(1) && v.sym_size(2) == k.sym_size(2),
               "expected [B, L, Hk, Dv] = [", k.sym_size(0), ", ", k.sym_size(1), ", ", k.sym_size(2),
               ", Dv] (as k), got ", ::ts::shape_str(v));
  TS_CHECK_ARG(op, last, last.sym_size(0) == q.sym_size(0) && last.sym_size(1) == q.sym_size(1),
               "expected shape [B, S] = [", q.sym_size(0), ", ", q.sym_size(1), "], got ", ::ts::shape_str(last));
  TS_CHECK_DTYPE(op, last, at::kLong);
  TS_CHECK_ARG(op, q, at::isFloatingType(q.scalar_type()), "expected a floating dtype, got ", q.scalar_type());
  TS_CHECK_ARG(op, k, k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
               "expected k and v in q's dtype ", q.scalar_type(), ", got ", k.scalar_type(), " and ", v.scalar_type());
  TS_CHECK_SAME_DEVICE(op, k, q);
  TS_CHECK_SAME_DEVICE(op, v, q);
  TS_CHECK_SAME_DEVICE(op, last, q);
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& last,
                            double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::decode_attention", "")
                       .typed<decltype(decode_attention)>();
  return op.call(q, k, v, last, scale);
}

at::Tensor MetaKernels::decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const at::Tensor& last, double) {
  check_decode_attention_args(q, k, v, last);
  return at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)}, q.options());
}

}  // namespace ts::ops
