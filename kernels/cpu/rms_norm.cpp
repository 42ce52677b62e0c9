#include "kernels/rms_norm.h"

#include <cmath>
#include <vector>

#include "kernels/common.h"

namespace ts::kern {
namespace {

// sum_i a[i] * b[i] in float64 over kLanes independent partial sums (then added in lane order),
// so the loop vectorizes without reassociation being left to the compiler; the result does not
// depend on the thread count.
constexpr int kLanes = 8;
double dot_f64(const float* a, const float* b, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += static_cast<double>(a[i + l]) * b[i + l];
  for (; i < n; ++i) acc[0] += static_cast<double>(a[i]) * b[i];
  double s = 0;
  for (double v : acc) s += v;
  return s;
}

}  // namespace

void rms_norm_forward_cpu(const RmsNormParams& p) {
  const int64_t D = p.dim;
  parallel_for(p.rows, 16, [&](int64_t r) {
    const float* x = p.x + r * D;
    float* y = p.y + r * D;
    // Accumulate the sum of squares in double: rows are short and this keeps the twin's error
    // well below the fp32 rounding of the output.
    const double ss = dot_f64(x, x, D);
    const float rstd = static_cast<float>(1.0 / std::sqrt(ss / D + p.eps));
    for (int64_t i = 0; i < D; ++i) y[i] = x[i] * rstd * p.weight[i];
    if (p.rstd) p.rstd[r] = rstd;
  });
}

void rms_norm_backward_cpu(const RmsNormBackwardParams& p) {
  const int64_t D = p.dim, R = p.rows;
  // dx = rstd * (w*g - x * rstd^2 * mean(w*g*x));  dw = sum_r g * x * rstd
  const int nchunks = static_cast<int>(std::min<int64_t>(std::max<int64_t>(R, 1), num_threads()));
  std::vector<double> partial(static_cast<size_t>(nchunks) * D, 0.0);
  const int64_t per = ceil_div(R, nchunks);
  parallel_for(nchunks, 0, [&](int64_t c) {
    double* dw = partial.data() + c * D;
    for (int64_t r = c * per; r < std::min(R, (c + 1) * per); ++r) {
      const float* x = p.x + r * D;
      const float* g = p.grad_y + r * D;
      const float rstd = p.rstd[r];
      float* gx = p.grad_x + r * D;
      for (int64_t i = 0; i < D; ++i) gx[i] = g[i] * p.weight[i];  // g * w in fp32, reused below
      const double dot = dot_f64(gx, x, D);
      const float coef = static_cast<float>(dot / D) * rstd * rstd;
      for (int64_t i = 0; i < D; ++i) {
        gx[i] = rstd * (gx[i] - x[i] * coef);
        dw[i] += static_cast<double>(g[i]) * x[i] * rstd;
      }
    }
  });
  for (int64_t i = 0; i < D; ++i) {
    double s = 0;
    for (int c = 0; c < nchunks; ++c) s += partial[c * D + i];
    p.grad_weight[i] = static_cast<float>(s);
  }
}

}  // namespace ts::kern
