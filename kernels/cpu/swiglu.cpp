// CPU twin of the fused SwiGLU activation (contract in kernels/swiglu.h): one pass per row, the
// inner loops plain arithmetic (vec_math.h's sigmoid) so that they vectorize.
#include "kernels/swiglu.h"

#include <algorithm>

#include "kernels/common.h"
#include "kernels/cpu/vec_math.h"

namespace ts::kern {
namespace {

// Rows per task: enough elements that a thread's share outweighs the fork (~8K elements).
int64_t row_grain(int64_t dim) { return dim > 0 ? std::max<int64_t>(1, 8192 / dim) : 1; }

}  // namespace

void swiglu_forward_cpu(const SwigluParams& p) {
  const int64_t F = p.dim;
  parallel_for(p.rows, row_grain(F), [&](int64_t r) {
    const float* __restrict g = p.gate + r * p.gate_ld;
    const float* __restrict u = p.up + r * p.up_ld;
    float* __restrict h = p.out + r * p.out_ld;
    for (int64_t i = 0; i < F; ++i) h[i] = g[i] * sigmoid(g[i]) * u[i];
  });
}

void swiglu_backward_cpu(const SwigluBackwardParams& p) {
  const int64_t F = p.dim;
  parallel_for(p.rows, row_grain(F), [&](int64_t r) {
    const float* __restrict dh = p.grad_out + r * p.grad_out_ld;
    const float* __restrict g = p.gate + r * p.gate_ld;
    const float* __restrict u = p.up + r * p.up_ld;
    float* __restrict dg = p.grad_gate + r * p.grad_gate_ld;
    float* __restrict du = p.grad_up + r * p.grad_up_ld;
    for (int64_t i = 0; i < F; ++i) {
      const float s = sigmoid(g[i]);
      dg[i] = dh[i] * u[i] * (s * (1.0f + g[i] * (1.0f - s)));
      du[i] = dh[i] * (g[i] * s);
    }
  });
}

}  // namespace ts::kern
