#include <cmath>
#include <vector>

#include "kernels/rms_norm.h"
#include "tests/kernels/compare.h"

namespace {

struct RmsRef {
  std::vector<double> y, rstd, gx, gw;
};

// float64 reference of forward and backward.
RmsRef reference(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& g, int64_t R,
                 int64_t D, double eps) {
  RmsRef ref{std::vector<double>(R * D), std::vector<double>(R), std::vector<double>(R * D), std::vector<double>(D, 0)};
  for (int64_t r = 0; r < R; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += double(x[r * D + i]) * x[r * D + i];
    double rs = 1.0 / std::sqrt(ss / D + eps);
    ref.rstd[r] = rs;
    double dot = 0;
    for (int64_t i = 0; i < D; ++i) {
      ref.y[r * D + i] = x[r * D + i] * rs * w[i];
      dot += double(g[r * D + i]) * w[i] * x[r * D + i];
    }
    for (int64_t i = 0; i < D; ++i) {
      ref.gx[r * D + i] = rs * (g[r * D + i] * double(w[i]) - x[r * D + i] * rs * rs * dot / D);
      ref.gw[i] += double(g[r * D + i]) * x[r * D + i] * rs;
    }
  }
  return ref;
}

class RmsNormCpu : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(RmsNormCpu, MatchesFloat64Reference) {
  const auto [R, D] = GetParam();
  const float eps = 1e-6f;
  auto x = ts::test::random_vector(R * D, 1 + R * 31 + D, 3.0f);
  auto w = ts::test::random_vector(D, 2 + D, 1.5f);
  auto g = ts::test::random_vector(R * D, 3 + R, 1.0f);
  auto y = ts::test::poisoned(R * D), rstd = ts::test::poisoned(R), gx = ts::test::poisoned(R * D),
       gw = ts::test::poisoned(D);
  ts::kern::rms_norm_forward_cpu({x.data(), w.data(), y.data(), rstd.data(), R, D, eps});
  ts::kern::rms_norm_backward_cpu({g.data(), x.data(), w.data(), rstd.data(), gx.data(), gw.data(), R, D});
  const auto ref = reference(x, w, g, R, D, eps);
  // Each output is a handful of fp32 roundings of O(1) terms (a few ulp); dgrad sums D products and
  // wgrad sums R products in fp32 per chunk, so allow ~sqrt(n) ulp growth on top.
  const double u = std::ldexp(1.0, -23);
  // grad_x = rstd * (g*w - x*coef) cancels; its rounding error scales with rstd times the size of
  // the two terms (|g*w| and |x*coef| are both bounded by ~|g|*|w| after normalization).
  double max_rstd = 0;
  for (double r : ref.rstd) max_rstd = std::max(max_rstd, r);
  TS_EXPECT_CLOSE(y.data(), ref.y.data(), R * D, 8 * u, 8 * u, 1e-12, "y");
  TS_EXPECT_CLOSE(rstd.data(), ref.rstd.data(), R, 0.0, 4 * u, 1e-12, "rstd");
  TS_EXPECT_CLOSE(gx.data(), ref.gx.data(), R * D, 16 * u * std::sqrt(double(D)) * max_rstd * 1.5, 16 * u,
                  D > 1 ? 1e-10 : 1.0 /* for D = 1 the true grad_x is ~eps-sized noise */, "grad_x");
  TS_EXPECT_CLOSE(gw.data(), ref.gw.data(), D, 16 * u * std::sqrt(double(R)), 16 * u, 1e-10, "grad_weight");
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormCpu,
                         ::testing::Values(std::pair<int64_t, int64_t>{1, 1}, std::pair<int64_t, int64_t>{7, 33},
                                           std::pair<int64_t, int64_t>{64, 128},
                                           std::pair<int64_t, int64_t>{513, 1024}));

}  // namespace
