// E4M3 codec: every code, random floats (ties, subnormals, saturation, NaN) against a float64
// reference of the grid; the scale and bf16 helpers.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/fp8.h"
#include "tests/kernels/compare.h"
#include "tests/kernels/test_fp8_util.h"

namespace {

using ts::kern::fp8_e4m3_decode;
using ts::kern::fp8_e4m3_encode;
namespace ref = ts::test::fp8;

TEST(Fp8Codec, EveryCodeDecodesExactlyAndRoundTrips) {
  const float* table = ts::kern::fp8_e4m3_decode_table();
  for (int c = 0; c < 256; ++c) {
    const double want = ref::e4m3_value(c);
    const float got = fp8_e4m3_decode(static_cast<uint8_t>(c));
    EXPECT_EQ(ref::bits_of(table[c]), ref::bits_of(got)) << "code " << c;
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c;
      EXPECT_EQ(std::signbit(got), c >= 128) << "code " << c;
      EXPECT_EQ(fp8_e4m3_encode(got), c) << "NaN keeps its sign, code " << c;
      continue;
    }
    EXPECT_EQ(static_cast<double>(got), want) << "code " << c;
    EXPECT_EQ(std::signbit(got), c >= 128) << "code " << c;  // 0x80 is -0
    EXPECT_EQ(fp8_e4m3_encode(got), c) << "code " << c;
  }
  EXPECT_EQ(fp8_e4m3_decode(0x7E), 448.0f);
  EXPECT_EQ(fp8_e4m3_decode(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_decode(0x08), std::ldexp(1.0f, -6));  // smallest normal
}

TEST(Fp8Codec, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    float x;
    int code;
  };
  const Case cases[] = {
      {448.0f, 0x7E},
      {449.0f, 0x7E},
      {464.0f, 0x7E},
      {465.0f, 0x7E},  // torch: 465 -> NaN
      {1e30f, 0x7E},
      {inf, 0x7E},
      {-inf, 0xFE},
      {-500.0f, 0xFE},
      {nan, 0x7F},
      {-nan, 0xFF},
      {0.0f, 0x00},
      {-0.0f, 0x80},
      {std::ldexp(1.0f, -9), 0x01},
      {std::ldexp(1.0f, -10), 0x00},            // tie between 0 and 2^-9: even 0
      {3 * std::ldexp(1.0f, -10), 0x02},        // tie between 1 and 2 (x 2^-9): even 2
      {std::ldexp(1.0f, -10) * 1.0001f, 0x01},  // just above the tie
      {-std::ldexp(1.0f, -11), 0x80},           // rounds to -0
      {std::ldexp(1.0f, -149), 0x00},           // fp32 subnormal
      {15 * std::ldexp(1.0f, -10), 0x08},       // 7.5 x 2^-9: tie 7 | 8, even 8 (2^-6)
      {1.0625f, 0x38},                          // tie 1 | 1.125: even (1.0)
      {1.1875f, 0x3A},                          // tie 1.125 | 1.25: even (1.25)
  };
  for (const auto& c : cases) EXPECT_EQ(int(fp8_e4m3_encode(c.x)), c.code) << "x = " << c.x;
}

// Random floats over every magnitude of interest, exact midpoints of the grid and their
// neighbours, and raw random bit patterns (NaN, inf, fp32 subnormals included).
TEST(Fp8Codec, EncodeMatchesNearestEvenReference) {
  std::vector<float> xs;
  std::mt19937_64 gen(7);
  for (float s : {1e-4f, 1e-3f, 1e-2f, 0.1f, 1.0f, 10.0f, 100.0f, 300.0f, 1000.0f}) {
    auto v = ref::normal_vector(20000, static_cast<uint64_t>(s * 1e4f) + 11, s);
    xs.insert(xs.end(), v.begin(), v.end());
  }
  for (int c = 0; c < 0x7E; ++c) {  // midpoints of neighbouring grid values are exact in fp32
    const float mid = static_cast<float>((ref::e4m3_value(c) + ref::e4m3_value(c + 1)) / 2);
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t u = bits(gen);
    float f;
    std::memcpy(&f, &u, 4);
    xs.push_back(f);
  }
  int64_t bad = 0;
  for (float x : xs) {
    const int want = ref::e4m3_encode_ref(x), got = fp8_e4m3_encode(x);
    if (want != got && ++bad <= 5) ADD_FAILURE() << "x = " << x << " got " << got << " want " << want;
  }
  EXPECT_EQ(bad, 0) << "of " << xs.size();
}

TEST(Fp8Codec, ScaleFromAmax) {
  using ts::kern::fp8_scale_from_amax;
  EXPECT_EQ(fp8_scale_from_amax(448.0f, false), 1.0f);
  EXPECT_EQ(fp8_scale_from_amax(0.0f, false), 1e-4f / 448.0f);  // floor
  EXPECT_EQ(fp8_scale_from_amax(5e-5f, false), 1e-4f / 448.0f);
  EXPECT_EQ(fp8_scale_from_amax(448.0f, true), 1.0f);      // already a power of two
  EXPECT_EQ(fp8_scale_from_amax(449.0f, true), 2.0f);      // rounds up
  EXPECT_EQ(fp8_scale_from_amax(3.0f, true), 0.0078125f);  // 3/448 = 0.0067 -> 2^-7
  EXPECT_TRUE(std::isinf(fp8_scale_from_amax(std::numeric_limits<float>::infinity(), true)));
  for (double amax : {1e-5, 1e-3, 0.37, 3.0, 1234.5, 3e37}) {
    EXPECT_EQ(fp8_scale_from_amax(float(amax), false), ref::scale_ref(float(amax), false)) << amax;
    EXPECT_EQ(fp8_scale_from_amax(float(amax), true), ref::scale_ref(float(amax), true)) << amax;
  }
}

// bf16 bits by round-to-nearest-even, against a double reference that rounds x / ulp to an
// integer (nearbyint rounds half to even in the default mode).
TEST(Fp8Codec, Bf16RoundNearestEven) {
  auto ref_bf16 = [](float x) -> double {
    if (x == 0) return x;
    int e;
    std::frexp(static_cast<double>(x), &e);                     // |x| in [2^(e-1), 2^e)
    const double ulp = std::ldexp(1.0, std::max(e - 8, -133));  // 8 significant bits
    return std::nearbyint(x / ulp) * ulp;
  };
  auto from_bf16 = [](uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  auto xs = ref::normal_vector(100000, 3, 10.0f);
  xs.push_back(1.00390625f);  // 1 + 2^-8: tie, to even 1.0
  xs.push_back(1.01171875f);  // 1 + 3*2^-8: tie, to even 1 + 2^-6
  for (float x : xs) ASSERT_EQ(double(from_bf16(ts::kern::fp8_f32_to_bf16_bits(x))), ref_bf16(x)) << x;
  EXPECT_TRUE(std::isnan(from_bf16(ts::kern::fp8_f32_to_bf16_bits(std::nanf("")))));
  EXPECT_TRUE(std::isinf(from_bf16(ts::kern::fp8_f32_to_bf16_bits(std::numeric_limits<float>::infinity()))));
}

}  // namespace

// The CPU quantizer's span function (AVX-512 when the build has it) against the scalar
// fp8_quantize_value: every fp32 bit pattern as the value with scale 1 (x / 1 == x), so every
// path of the encoder (normal, subnormal, saturation, inf, NaN, both signs) is compared.
TEST(Fp8Codec, VectorQuantizerMatchesScalarForAllFloats) {
  constexpr int64_t kChunk = int64_t{1} << 16;
  constexpr int64_t kChunks = (int64_t{1} << 32) / kChunk;
  int64_t mismatches = 0;
  uint32_t first_bad = 0;
#pragma omp parallel
  {
    std::vector<float> x(kChunk);
    std::vector<uint8_t> q(kChunk);
#pragma omp for reduction(+ : mismatches)
    for (int64_t c = 0; c < kChunks; ++c) {
      for (int64_t i = 0; i < kChunk; ++i) x[i] = ts::kern::fp8_f32_from_bits(static_cast<uint32_t>(c * kChunk + i));
      std::fill(q.begin(), q.end(), uint8_t{0xAB});
      ts::kern::fp8_quantize_span_cpu(x.data(), q.data(), kChunk, 1.0f);
      for (int64_t i = 0; i < kChunk; ++i)
        if (q[i] != ts::kern::fp8_quantize_value(x[i], 1.0f)) {
#pragma omp critical
          if (mismatches == 0) first_bad = static_cast<uint32_t>(c * kChunk + i);
          ++mismatches;
        }
    }
  }
  EXPECT_EQ(mismatches, 0) << "first mismatch at bits 0x" << std::hex << first_bad;
}

// Random data with outliers over random scales and ragged lengths (the vector body plus the
// scalar tail), against the scalar quantizer.
TEST(Fp8Codec, VectorQuantizerMatchesScalarOnRandomScales) {
  std::mt19937 rng(123);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<float> ud(-30, 30);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 300);
    std::vector<float> x(n);
    for (auto& v : x) v = nd(rng) * std::exp2(ud(rng) / 3);
    x[rng() % n] *= 1e4f;  // an outlier
    const float scale = std::exp2(ud(rng)) * (1 + nd(rng) * nd(rng) * 0.1f + 0.5f);
    std::vector<uint8_t> q(n, 0xAB);
    ts::kern::fp8_quantize_span_cpu(x.data(), q.data(), n, std::abs(scale));
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(q[i], ts::kern::fp8_quantize_value(x[i], std::abs(scale))) << "trial " << trial << " i " << i;
  }
}
