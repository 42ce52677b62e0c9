// CPU twin of the rotary embedding (contract in kernels/rope.h). Plain loops: with the tables'
// row hoisted per (b, t) the compiler vectorizes the pair loop; fp-contract is off for this file
// (CMakeLists.txt) so that no product is fused into its sum.
#include "kernels/rope.h"

#include "kernels/common.h"

namespace ts::kern {

void rope_cpu(const RopeParams& p) {
  TS_KERNEL_ASSERT(p.dim % 2 == 0 && p.batch >= 0 && p.seq >= 0 && p.heads >= 0);
  const int64_t half = p.dim / 2, rows = p.batch * p.seq;
  const float sign = p.inverse ? -1.0f : 1.0f;
  parallel_for(rows, rows * p.heads * p.dim < (int64_t{1} << 16) ? rows : 1, [&](int64_t r) {
    const int64_t b = r / p.seq, t = r % p.seq;
    const int64_t table_row = (p.per_sequence ? b * p.seq : 0) + t;
    const float* c = p.cos + table_row * half;
    const float* s = p.sin + table_row * half;
    for (int64_t h = 0; h < p.heads; ++h) {
      const float* x = p.x + (r * p.heads + h) * p.dim;
      float* y = p.y + (r * p.heads + h) * p.dim;
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = x[2 * i], x1 = x[2 * i + 1], si = sign * s[i];
        const float a = x0 * c[i], bb = x1 * si, e = x0 * si, f = x1 * c[i];
        y[2 * i] = a - bb;
        y[2 * i + 1] = e + f;
      }
    }
  });
}

}  // namespace ts::kern
