// Input checks for ops: each macro builds its message from the op, the argument name and the
// condition, so a message cannot drift from what is checked.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace ts {

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace ts

// Generic condition on an argument.
#define TS_CHECK_ARG(op, arg, cond, ...) TORCH_CHECK((cond), "tinyseek.", op, ": argument '", #arg, "': ", __VA_ARGS__)

#define TS_CHECK_DIM(op, t, n) \
  TS_CHECK_ARG(op, t, (t).dim() == (n), "expected a ", n, "-d tensor, got shape ", ::ts::shape_str(t))

#define TS_CHECK_SIZE(op, t, d, n)                                                                         \
  TS_CHECK_ARG(op, t, (t).size(d) == (n), "expected size ", (n), " at dim ", d, " (", #n, "), got shape ", \
               ::ts::shape_str(t))

#define TS_CHECK_DTYPE(op, t, dt) \
  TS_CHECK_ARG(op, t, (t).scalar_type() == (dt), "expected dtype ", dt, ", got ", (t).scalar_type())

#define TS_CHECK_SAME_DEVICE(op, t, ref)                                                                       \
  TS_CHECK_ARG(op, t, (t).device() == (ref).device(), "expected device ", (ref).device(), " (same as '", #ref, \
               "'), got ", (t).device())

#define TS_CHECK_CONTIGUOUS(op, t) \
  TS_CHECK_ARG(op, t, (t).is_contiguous(), "expected a contiguous tensor (strides ", (t).strides(), ")")
