// Fused SwiGLU (kernels/swiglu.h) against float64: forward and backward over fresh random rows
// (contiguous and strided views of one [R, 2F] buffer), the non-finite rules of the contract,
// and the CUDA kernels against the CPU twin where a device exists.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/swiglu.h"
#include "tests/kernels/compare.h"

#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace {

struct Ref {
  std::vector<double> h, dg, du;
};

// The float64 reference: silu(g) = g / (1 + exp(-g)) and its derivative as torch writes them.
Ref reference(const float* g, const float* u, const float* d, int64_t R, int64_t F, int64_t ld) {
  Ref r{std::vector<double>(R * F), std::vector<double>(R * F), std::vector<double>(R * F)};
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < F; ++j) {
      const double gv = g[i * ld + j], uv = u[i * ld + j], dv = d[i * F + j];
      const double s = 1.0 / (1.0 + std::exp(-gv)), silu = gv / (1.0 + std::exp(-gv));
      r.h[i * F + j] = silu * uv;
      r.dg[i * F + j] = dv * uv * (s * (1.0 + gv * (1.0 - s)));
      r.du[i * F + j] = dv * silu;
    }
  return r;
}

struct Out {
  std::vector<float> h, dg, du;
};

// gate and up are the two halves of one [R, 2F] buffer when `packed`, else separate [R, F] rows.
Out run_cpu(const std::vector<float>& gu, const std::vector<float>& d, int64_t R, int64_t F, bool packed) {
  const int64_t ld = packed ? 2 * F : F;
  const float* g = gu.data();
  const float* u = packed ? gu.data() + F : gu.data() + R * F;
  Out o{ts::test::poisoned(R * F), ts::test::poisoned(R * F), ts::test::poisoned(R * F)};
  ts::kern::swiglu_forward_cpu({g, u, o.h.data(), R, F, ld, ld, F});
  ts::kern::swiglu_backward_cpu({d.data(), g, u, o.dg.data(), o.du.data(), R, F, F, ld, ld, F, F});
  return o;
}

class SwigluCpu : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, bool>> {};

TEST_P(SwigluCpu, MatchesFloat64Reference) {
  const auto [R, F, packed] = GetParam();
  SCOPED_TRACE("R=" + std::to_string(R) + " F=" + std::to_string(F) + " packed=" + std::to_string(packed));
  // Gates over [-12, 12]: the saturated tails and the curved middle of silu both appear.
  auto gu = ts::test::random_vector(2 * R * F, 11 + R * 7 + F, 12.0f);
  const auto d = ts::test::random_vector(R * F, 5 + F, 1.0f);
  const auto o = run_cpu(gu, d, R, F, packed);
  const int64_t ld = packed ? 2 * F : F;
  const auto ref = reference(gu.data(), packed ? gu.data() + F : gu.data() + R * F, d.data(), R, F, ld);
  // A few fp32 roundings of O(1) factors plus the polynomial exp (3 ulp): 16 ulp relative, and
  // an absolute floor for the products that cancel to near 0 (silu's derivative near g = -1.28).
  const double u = std::ldexp(1.0, -23);
  TS_EXPECT_CLOSE(o.h.data(), ref.h.data(), R * F, 16 * u, 16 * u, 1e-12, "h");
  TS_EXPECT_CLOSE(o.dg.data(), ref.dg.data(), R * F, 64 * u, 16 * u, 1e-12, "grad_gate");
  TS_EXPECT_CLOSE(o.du.data(), ref.du.data(), R * F, 16 * u, 16 * u, 1e-12, "grad_up");
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwigluCpu,
                         ::testing::Values(std::make_tuple(1, 1, false), std::make_tuple(3, 7, true),
                                           std::make_tuple(64, 352, false), std::make_tuple(257, 96, true),
                                           std::make_tuple(2048, 33, false)));

TEST(SwigluCpu, NonFiniteFollowTheReference) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  // Each column one case: gate NaN, +inf, -inf, large negative (exp(-g) overflows in fp32),
  // large positive, finite gate with up NaN, finite gate with up inf, finite with grad NaN.
  const std::vector<float> g{nan, inf, -inf, -100.0f, 100.0f, 0.5f, -0.5f, 2.0f};
  const std::vector<float> u{1.5f, 2.0f, 2.0f, 3.0f, -1.0f, nan, inf, 0.75f};
  const std::vector<float> d{1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, nan};
  const int64_t F = static_cast<int64_t>(g.size());
  std::vector<float> gu(g);
  gu.insert(gu.end(), u.begin(), u.end());
  const auto o = run_cpu(gu, d, 1, F, false);
  const auto ref = reference(g.data(), u.data(), d.data(), 1, F, F);
  const double eps = std::ldexp(1.0, -20);
  TS_EXPECT_CLOSE(o.h.data(), ref.h.data(), F, 1e-30, eps, 1.0, "h");
  TS_EXPECT_CLOSE(o.dg.data(), ref.dg.data(), F, 1e-30, eps, 1.0, "grad_gate");
  TS_EXPECT_CLOSE(o.du.data(), ref.du.data(), F, 1e-30, eps, 1.0, "grad_up");
  // The cases the contract names, spelled out.
  EXPECT_TRUE(std::isnan(o.h[0]));
  EXPECT_EQ(o.h[1], inf);
  EXPECT_TRUE(std::isnan(o.h[2]));
  EXPECT_EQ(o.h[3], 0.0f);
  EXPECT_TRUE(std::isnan(o.dg[1]) && std::isnan(o.dg[2]));
}

TEST(SwigluCpu, EmptyIsANoOp) {
  std::vector<float> sentinel{1.0f};
  ts::kern::swiglu_forward_cpu({sentinel.data(), sentinel.data(), sentinel.data(), 0, 5, 5, 5, 5});
  ts::kern::swiglu_forward_cpu({sentinel.data(), sentinel.data(), sentinel.data(), 4, 0, 0, 0, 0});
  EXPECT_EQ(sentinel[0], 1.0f);
}

#if defined(TINYSEEK_WITH_CUDA)
TEST(SwigluCuda, MatchesCpuTwin) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t R = 300, F = 200;
  auto gu = ts::test::random_vector(2 * R * F, 77, 12.0f);
  gu[5] = std::nanf(""), gu[6] = std::numeric_limits<float>::infinity(),
  gu[7] = -std::numeric_limits<float>::infinity();
  const auto d = ts::test::random_vector(R * F, 78, 1.0f);
  const auto want = run_cpu(gu, d, R, F, true);
  const size_t bytes = R * F * sizeof(float);
  float *dgu, *dd, *dh, *ddg, *ddu;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dgu), 2 * bytes), cudaSuccess);
  for (float** p : {&dd, &dh, &ddg, &ddu}) ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(p), bytes), cudaSuccess);
  cudaMemcpy(dgu, gu.data(), 2 * bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(dd, d.data(), bytes, cudaMemcpyHostToDevice);
  for (float* p : {dh, ddg, ddu}) cudaMemset(p, 0xff, bytes);  // NaN poison
  ts::kern::swiglu_forward_cuda({dgu, dgu + F, dh, R, F, 2 * F, 2 * F, F, false}, nullptr);
  ts::kern::swiglu_backward_cuda({dd, dgu, dgu + F, ddg, ddu, R, F, F, 2 * F, 2 * F, F, F, false}, nullptr);
  Out got{std::vector<float>(R * F), std::vector<float>(R * F), std::vector<float>(R * F)};
  ASSERT_EQ(cudaMemcpy(got.h.data(), dh, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got.dg.data(), ddg, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got.du.data(), ddu, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  for (float* p : {dgu, dd, dh, ddg, ddu}) cudaFree(p);
  const double u = std::ldexp(1.0, -23);  // expf against the polynomial: a few ulp each way
  TS_EXPECT_CLOSE(got.h.data(), want.h.data(), R * F, 32 * u, 32 * u, 1e-12, "h");
  TS_EXPECT_CLOSE(got.dg.data(), want.dg.data(), R * F, 128 * u, 32 * u, 1e-12, "grad_gate");
  TS_EXPECT_CLOSE(got.du.data(), want.du.data(), R * F, 32 * u, 32 * u, 1e-12, "grad_up");
}
#endif

}  // namespace
