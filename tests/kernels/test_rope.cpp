// Rotary embedding (kernels/rope.h) against a float64 rotation: shared and per-sequence tables,
// the inverse rotation (which must undo the forward to rounding), in place, and a CUDA twin
// comparison where a device exists (bitwise for fp32: both round every product before its sum).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/rope.h"
#include "tests/kernels/compare.h"

#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace {

constexpr double kU = 0x1p-24;

struct Case {
  int64_t B, T, H, D;
  bool per_sequence, inverse;
};

struct Tables {
  std::vector<float> cos, sin;
};

// Angles of arbitrary positions, so that every (b, t) row differs.
Tables tables(const Case& c, uint64_t seed) {
  const int64_t rows = (c.per_sequence ? c.B : 1) * c.T, half = c.D / 2;
  const auto ang = ts::test::random_vector(rows * half, seed, 50.0f);
  Tables t;
  for (float a : ang) t.cos.push_back(std::cos(a)), t.sin.push_back(std::sin(a));
  return t;
}

std::vector<double> reference(const Case& c, const std::vector<float>& x, const Tables& t) {
  const int64_t half = c.D / 2;
  std::vector<double> y(x.size());
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t s = 0; s < c.T; ++s)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const int64_t row = (c.per_sequence ? b * c.T : 0) + s, e = ((b * c.T + s) * c.H + h) * c.D + 2 * i;
          const double co = t.cos[row * half + i], si = (c.inverse ? -1.0 : 1.0) * t.sin[row * half + i];
          y[e] = x[e] * co - x[e + 1] * si;
          y[e + 1] = x[e] * si + x[e + 1] * co;
        }
  return y;
}

TEST(Rope, MatchesFloat64) {
  for (const Case& c : {Case{2, 5, 3, 8, false, false}, Case{3, 1, 4, 32, true, false}, Case{1, 7, 2, 16, true, true},
                        Case{4, 64, 4, 32, false, true}, Case{2, 3, 1, 2, true, false}}) {
    SCOPED_TRACE("B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
                 " D=" + std::to_string(c.D) + " per_sequence=" + std::to_string(c.per_sequence) +
                 " inverse=" + std::to_string(c.inverse));
    const int64_t n = c.B * c.T * c.H * c.D;
    const auto x = ts::test::random_vector(n, 3);
    const auto t = tables(c, 4);
    auto y = ts::test::poisoned(n);
    ts::kern::rope_cpu({x.data(), t.cos.data(), t.sin.data(), y.data(), c.B, c.T, c.H, c.D, c.per_sequence, c.inverse});
    // Each output is a two-term sum of rounded products: |error| <= 2u (|x0 c| + |x1 s|) + u |y|;
    // with |x| <= 1 and |c|, |s| <= 1 that is within 3u * 2.
    TS_EXPECT_CLOSE(y.data(), reference(c, x, t).data(), n, 6 * kU, 0.0);
  }
}

TEST(Rope, InverseUndoesForwardInPlace) {
  const Case c{2, 9, 3, 16, true, false};
  const int64_t n = c.B * c.T * c.H * c.D;
  const auto x = ts::test::random_vector(n, 5);
  const auto t = tables(c, 6);
  auto y = x;
  ts::kern::rope_cpu({y.data(), t.cos.data(), t.sin.data(), y.data(), c.B, c.T, c.H, c.D, true, false});
  ts::kern::rope_cpu({y.data(), t.cos.data(), t.sin.data(), y.data(), c.B, c.T, c.H, c.D, true, true});
  TS_EXPECT_CLOSE(y.data(), x.data(), n, 16 * kU, 0.0);
}

#if defined(TINYSEEK_WITH_CUDA)
TEST(RopeCuda, MatchesCpuTwinBitwise) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no CUDA device";
  const Case c{3, 17, 4, 32, true, true};
  const int64_t n = c.B * c.T * c.H * c.D;
  const auto x = ts::test::random_vector(n, 7);
  const auto t = tables(c, 8);
  auto want = ts::test::poisoned(n);
  ts::kern::rope_cpu({x.data(), t.cos.data(), t.sin.data(), want.data(), c.B, c.T, c.H, c.D, true, true});
  float *dx, *dc, *ds, *dy;
  const size_t tb = t.cos.size() * sizeof(float);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dx), n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dy), n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dc), tb), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&ds), tb), cudaSuccess);
  cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(dc, t.cos.data(), tb, cudaMemcpyHostToDevice);
  cudaMemcpy(ds, t.sin.data(), tb, cudaMemcpyHostToDevice);
  cudaMemset(dy, 0xff, n * sizeof(float));  // NaN poison
  ts::kern::rope_cuda({dx, dc, ds, dy, c.B, c.T, c.H, c.D, true, true, false}, nullptr);
  std::vector<float> got(n);
  ASSERT_EQ(cudaMemcpy(got.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (float* p : {dx, dy, dc, ds}) cudaFree(p);
  EXPECT_EQ(got, want);
}
#endif

}  // namespace
