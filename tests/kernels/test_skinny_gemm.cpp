// Skinny GEMM (kernels/skinny_gemm.h) against a float64 loop: row counts that fill and miss the
// 3-row tiles, widths that fill and miss the 8-column blocks, depths with and without a k % 8
// tail, padded row strides (the padding must stay untouched), and the contract's promise that a
// row's result does not depend on the other rows in the call or on the thread count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/skinny_gemm.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#include "tests/kernels/compare.h"

namespace {

constexpr double kU = 0x1p-24;  // fp32 unit roundoff

struct Case {
  int64_t m, n, k, ldx_pad, ldy_pad;
};

std::string describe(const Case& c) {
  return "M=" + std::to_string(c.m) + " N=" + std::to_string(c.n) + " K=" + std::to_string(c.k) + " ldx=K+" +
         std::to_string(c.ldx_pad) + " ldy=N+" + std::to_string(c.ldy_pad);
}

struct Product {
  std::vector<float> x, w, y;
  int64_t ldx, ldy;
};

Product product(const Case& c, uint64_t seed) {
  Product r;
  r.ldx = c.k + c.ldx_pad;
  r.ldy = c.n + c.ldy_pad;
  r.x = ts::test::random_vector(c.m * r.ldx, seed);
  r.w = ts::test::random_vector(c.n * c.k, seed + 1);
  r.y = ts::test::poisoned(c.m * r.ldy);
  ts::kern::skinny_gemm_cpu({r.x.data(), r.ldx, r.w.data(), r.y.data(), r.ldy, c.m, c.n, c.k});
  return r;
}

TEST(SkinnyGemm, MatchesFloat64) {
  const std::vector<Case> cases = {
      {1, 128, 128, 0, 0},  {2, 352, 128, 0, 0}, {3, 128, 352, 0, 0},  {4, 256, 128, 0, 0},
      {5, 13, 131, 3, 2},   {7, 9, 8, 0, 5},     {8, 1, 7, 1, 0},      {17, 33, 65, 0, 1},
      {32, 512, 128, 0, 0}, {1, 7, 1, 0, 0},     {3, 1000, 300, 4, 3},  // the last over the threading threshold
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    const Product r = product(c, 10 + c.m);
    std::vector<double> want(c.m * c.n);
    std::vector<float> got(c.m * c.n);
    double max_abs = 0;
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t j = 0; j < c.n; ++j) {
        double acc = 0, abs_acc = 0;
        for (int64_t p = 0; p < c.k; ++p) {
          const double v = double(r.x[i * r.ldx + p]) * r.w[j * c.k + p];
          acc += v;
          abs_acc += std::abs(v);
        }
        want[i * c.n + j] = acc;
        got[i * c.n + j] = r.y[i * r.ldy + j];
        max_abs = std::max(max_abs, abs_acc);
      }
      for (int64_t j = c.n; j < r.ldy; ++j) EXPECT_TRUE(std::isnan(r.y[i * r.ldy + j])) << "padding written";
    }
    // |error| <= K u sum|x w| to first order for any summation order (1% margin).
    TS_EXPECT_CLOSE(got.data(), want.data(), c.m * c.n, 1.01 * c.k * kU * max_abs, 0.0);
  }
}

TEST(SkinnyGemm, RowResultIndependentOfOtherRows) {
  const Case all{11, 37, 133, 2, 1};
  const Product r = product(all, 7);
  for (int64_t i = 0; i < all.m; ++i) {
    std::vector<float> alone(all.n, std::nanf(""));
    ts::kern::skinny_gemm_cpu({r.x.data() + i * r.ldx, r.ldx, r.w.data(), alone.data(), all.n, 1, all.n, all.k});
    for (int64_t j = 0; j < all.n; ++j) ASSERT_EQ(alone[j], r.y[i * r.ldy + j]) << "row " << i << " col " << j;
  }
  // Two rows at an offset: another tiling of the same rows.
  std::vector<float> pair(2 * all.n, std::nanf(""));
  ts::kern::skinny_gemm_cpu({r.x.data() + 4 * r.ldx, r.ldx, r.w.data(), pair.data(), all.n, 2, all.n, all.k});
  for (int64_t j = 0; j < 2 * all.n; ++j) ASSERT_EQ(pair[j], r.y[(4 + j / all.n) * r.ldy + j % all.n]);
}

#if defined(_OPENMP)
TEST(SkinnyGemm, ThreadCountDoesNotChangeResults) {
  const Case big{6, 700, 320, 0, 0};  // 1.3M multiply-adds: over the threading threshold
  ASSERT_GE(big.m * big.n * big.k, ts::kern::kSkinnyGemmParallelWork);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Product one = product(big, 3);
  omp_set_num_threads(3);
  const Product three = product(big, 3);
  omp_set_num_threads(threads);
  EXPECT_EQ(one.y, three.y);
}
#endif

}  // namespace
