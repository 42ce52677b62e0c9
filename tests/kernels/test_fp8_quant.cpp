// FP8 tilewise / blockwise quantization and dequantization against float64 references: scales
// bit for bit, codes bit for bit, and the round-trip error bound of E4M3.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/common.h"
#include "kernels/fp8.h"
#include "tests/kernels/compare.h"
#include "tests/kernels/test_fp8_util.h"

namespace {

namespace ref = ts::test::fp8;
using ts::kern::ceil_div;

// Data with outliers: uniform in [-1, 1] (never 0), every 37th element scaled by 100 (so most of
// an outlier's tile lands in E4M3's subnormal range), and one tile of values below the 1e-4
// amax floor.
std::vector<float> outlier_data(int64_t n, uint64_t seed) {
  auto v = ts::test::random_vector(n, seed, 1.0f);
  for (int64_t i = 0; i < n; i += 37) v[i] *= 100.0f;
  for (int64_t i = 0; i < std::min<int64_t>(n, 64); ++i) v[i] *= 1e-6f;
  return v;
}

// Checks one tile [r0, r1) x [c0, c1) of x (row stride K) against its scale and codes:
// scale bit-exact, codes bit-exact (q = e4m3(fl32(x / scale))), round-trip error bounds.
void check_tile(const std::vector<float>& x, const std::vector<uint8_t>& q, int64_t K, int64_t r0, int64_t r1,
                int64_t c0, int64_t c1, float scale, bool pow2, const std::string& where) {
  double amax = 0;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c)
      if (!std::isnan(x[r * K + c])) amax = std::max(amax, std::fabs(double(x[r * K + c])));
  ASSERT_EQ(ref::bits_of(scale), ref::bits_of(ref::scale_ref(amax, pow2))) << where << " amax " << amax;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const float xv = x[r * K + c];
      const float quot = static_cast<float>(double(xv) / scale);  // = fl32(x / scale)
      const uint8_t code = q[r * K + c];
      const int want = std::isnan(quot) ? 0x7F : ref::e4m3_encode_ref(quot);  // quantizers write NaN as 0x7F
      ASSERT_EQ(int(code), want) << where << " at (" << r << ", " << c << ") x " << xv;
      if (pow2) {
        ASSERT_LE(std::fabs(quot), 448.0f) << "pow2 scales never saturate";
      }
      if (std::isnan(xv) || std::isinf(scale)) continue;
      // E4M3 keeps 3 mantissa bits: relative error <= 2^-4 in the normal range (plus the fp32
      // roundings of x/scale and decode*scale, 2^-23 each); absolute <= 2^-10 * scale below it.
      const double back = double(ref::e4m3_value(code)) * scale;
      const double err = std::fabs(back - xv);
      if (std::fabs(quot) >= std::ldexp(1.0, -6))
        ASSERT_LE(err, std::fabs(xv) * (std::ldexp(1.0, -4) + std::ldexp(1.0, -21))) << where << " x " << xv;
      else
        ASSERT_LE(err, std::ldexp(1.0, -10) * scale * (1 + std::ldexp(1.0, -21))) << where << " x " << xv;
    }
}

struct QuantCase {
  int64_t rows, cols, tile;  // tile: G (tilewise) or B (blockwise)
  bool pow2;
};
std::vector<QuantCase> with_pow2(std::vector<QuantCase> cases) {
  const size_t n = cases.size();
  for (size_t i = 0; i < n; ++i) cases.push_back({cases[i].rows, cases[i].cols, cases[i].tile, true});
  return cases;
}
std::string case_name(const ::testing::TestParamInfo<QuantCase>& info) {
  const auto& c = info.param;
  return std::to_string(c.rows) + "x" + std::to_string(c.cols) + "_tile" + std::to_string(c.tile) +
         (c.pow2 ? "_pow2" : "");
}

class Fp8QuantTilewise : public ::testing::TestWithParam<QuantCase> {};

TEST_P(Fp8QuantTilewise, MatchesFloat64Reference) {
  const auto [M, K, G, pow2] = GetParam();  // x [M, K], tiles 1 x G
  const int64_t KT = ceil_div(K, G);
  auto x = outlier_data(M * K, 100 + M * 7 + K + G + pow2);
  auto q = ref::poisoned_codes(M * K);
  auto scale = ts::test::poisoned(M * KT);
  ts::kern::fp8_quantize_tilewise_cpu({x.data(), q.data(), scale.data(), M, K, G, pow2});
  for (int64_t r = 0; r < M; ++r)
    for (int64_t t = 0; t < KT; ++t)  // the last tile covers the remaining K % G columns
      check_tile(x, q, K, r, r + 1, t * G, std::min(K, (t + 1) * G), scale[r * KT + t], pow2,
                 "tile (" + std::to_string(r) + ", " + std::to_string(t) + ")");

  // Dequantize: decode(q) * scale in one fp32 multiply (the double product of a 4-bit and a
  // 24-bit significand is exact, so rounding it once to fp32 is the reference, bit for bit).
  auto out = ts::test::poisoned(M * K);
  ts::kern::fp8_dequantize_cpu({q.data(), scale.data(), out.data(), M, K, 1, G});
  std::vector<float> want(M * K);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < K; ++c)
      want[r * K + c] = static_cast<float>(ref::e4m3_value(q[r * K + c]) * scale[r * KT + c / G]);
  TS_EXPECT_CLOSE(out.data(), want.data(), M * K, 0.0, 0.0, 0.0, "dequantize 1xG");
}

INSTANTIATE_TEST_SUITE_P(
    Fp8Shapes, Fp8QuantTilewise,
    ::testing::ValuesIn(with_pow2(
        {{3, 200, 128, false}, {5, 333, 128, false}, {64, 512, 128, false}, {7, 100, 32, false}, {1, 1, 128, false}})),
    case_name);

class Fp8QuantBlockwise : public ::testing::TestWithParam<QuantCase> {};

TEST_P(Fp8QuantBlockwise, MatchesFloat64Reference) {
  const auto [N, K, B, pow2] = GetParam();
  const int64_t NB = ceil_div(N, B), KB = ceil_div(K, B);
  auto w = outlier_data(N * K, 200 + N * 3 + K + B + pow2);
  auto q = ref::poisoned_codes(N * K);
  auto scale = ts::test::poisoned(NB * KB);
  ts::kern::fp8_quantize_blockwise_cpu({w.data(), q.data(), scale.data(), N, K, B, pow2});
  for (int64_t i = 0; i < NB; ++i)
    for (int64_t j = 0; j < KB; ++j)
      check_tile(w, q, K, i * B, std::min(N, (i + 1) * B), j * B, std::min(K, (j + 1) * B), scale[i * KB + j], pow2,
                 "block (" + std::to_string(i) + ", " + std::to_string(j) + ")");
  auto out = ts::test::poisoned(N * K);
  ts::kern::fp8_dequantize_cpu({q.data(), scale.data(), out.data(), N, K, B, B});
  std::vector<float> want(N * K);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < K; ++c)
      want[r * K + c] = static_cast<float>(ref::e4m3_value(q[r * K + c]) * scale[(r / B) * KB + c / B]);
  TS_EXPECT_CLOSE(out.data(), want.data(), N * K, 0.0, 0.0, 0.0, "dequantize BxB");
}

INSTANTIATE_TEST_SUITE_P(Fp8Shapes, Fp8QuantBlockwise,
                         ::testing::ValuesIn(with_pow2(
                             {{200, 333, 128, false}, {128, 256, 128, false}, {7, 5, 4, false}, {1, 129, 128, false}})),
                         case_name);

// Values whose quotient x / scale lies in E4M3's subnormal range (|x / scale| < 2^-6) for a
// whole row: one large element per tile sets the scale, the rest are 1e4 times smaller.
TEST(Fp8Quant, SubnormalRangeInputs) {
  const int64_t M = 4, K = 256;
  auto x = ts::test::random_vector(M * K, 17, 3e-3f);
  for (int64_t r = 0; r < M; ++r) x[r * K] = x[r * K + 128] = 100.0f;  // scale 100/448: |x/scale| < 0.0135
  auto q = ref::poisoned_codes(M * K);
  auto scale = ts::test::poisoned(M * 2);
  ts::kern::fp8_quantize_tilewise_cpu({x.data(), q.data(), scale.data(), M, K, 128, false});
  int64_t subnormal_codes = 0;
  for (int64_t i = 0; i < M * K; ++i) subnormal_codes += (q[i] & 0x78) == 0;
  EXPECT_GE(subnormal_codes, M * K - 2 * M) << "all but the large elements are subnormal";
  for (int64_t r = 0; r < M; ++r)
    for (int64_t t = 0; t < 2; ++t)
      check_tile(x, q, K, r, r + 1, t * 128, (t + 1) * 128, scale[r * 2 + t], false, "subnormal tile");
}

// NaN is ignored by amax and survives as a NaN code; +inf makes the tile's scale inf, and the
// whole tile dequantizes to NaN.
TEST(Fp8Quant, NonFiniteInputs) {
  const int64_t M = 2, K = 256;
  auto x = ts::test::random_vector(M * K, 23, 2.0f);
  auto clean = x;
  x[5] = std::numeric_limits<float>::quiet_NaN();
  x[7] = -std::numeric_limits<float>::quiet_NaN();
  x[K + 130] = std::numeric_limits<float>::infinity();
  auto q = ref::poisoned_codes(M * K), q_clean = ref::poisoned_codes(M * K);
  auto scale = ts::test::poisoned(M * 2), scale_clean = ts::test::poisoned(M * 2);
  clean[5] = clean[7] = 0.5f;  // same tile without the NaNs: smaller |values|, so the amax is unchanged
  ts::kern::fp8_quantize_tilewise_cpu({x.data(), q.data(), scale.data(), M, K, 128, false});
  ts::kern::fp8_quantize_tilewise_cpu({clean.data(), q_clean.data(), scale_clean.data(), M, K, 128, false});
  EXPECT_EQ(scale[0], scale_clean[0]);
  EXPECT_EQ(q[5], 0x7F);
  EXPECT_EQ(q[7], 0x7F);        // the quantizers write every NaN as +NaN
  EXPECT_EQ(q[K + 130], 0x7F);  // inf / inf
  for (int64_t c = 0; c < 128; ++c)
    if (c != 5 && c != 7) {
      EXPECT_EQ(q[c], q_clean[c]) << c;
    }
  EXPECT_TRUE(std::isinf(scale[3]));  // row 1, tile 1 holds the inf
  EXPECT_EQ(scale[1], scale_clean[1]);
  EXPECT_EQ(scale[2], scale_clean[2]);
  auto out = ts::test::poisoned(M * K);
  for (auto& v : out) v = 1.0f;  // so the NaNs below must come from the kernel
  ts::kern::fp8_dequantize_cpu({q.data(), scale.data(), out.data(), M, K, 1, 128});
  EXPECT_TRUE(std::isnan(out[5]));
  for (int64_t c = K + 128; c < 2 * K; ++c) EXPECT_TRUE(std::isnan(out[c])) << c;
  for (int64_t c = K; c < K + 128; ++c) EXPECT_TRUE(std::isfinite(out[c])) << c;
}

}  // namespace
