// float64 references shared by the FP8 tests (test_fp8_*.cpp): the E4M3 grid, a nearest-even
// saturating encoder, the tile scale, and the float64 product of dequantized GEMM operands.
// Written independently of kernels/fp8.h's bit tricks.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/common.h"
#include "kernels/fp8.h"
#include "tests/kernels/compare.h"

namespace ts::test::fp8 {

// Value of an e4m3 code from its fields, in double. NaN codes return NaN.
inline double e4m3_value(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::nan("");
  const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

// Nearest e4m3 code to x: ties to the even code (mantissa lsb 0), |x| >= 448 saturates to 448,
// NaN keeps its sign, -0 and negative values that round to 0 give 0x80.
inline uint8_t e4m3_encode_ref(double x) {
  if (std::isnan(x)) return std::signbit(x) ? 0xFF : 0x7F;
  const int sign = std::signbit(x) ? 0x80 : 0;
  const double ax = std::fabs(x);
  if (ax >= 448.0) return static_cast<uint8_t>(sign | 0x7E);
  int lo = 0;  // largest code in [0, 0x7E] whose value is <= ax (codes are increasing)
  while (lo + 1 <= 0x7E && e4m3_value(lo + 1) <= ax) ++lo;
  const int hi = lo + 1;
  const double dlo = ax - e4m3_value(lo), dhi = e4m3_value(hi) - ax;
  const int code = dlo < dhi ? lo : (dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi));
  return static_cast<uint8_t>(sign | code);
}

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Reference tile scale: max(amax, 1e-4) / 448 rounded once to fp32 (a double quotient of two
// floats rounds to the correctly rounded fp32 quotient), optionally 2^ceil(log2(scale)).
inline float scale_ref(double amax, bool pow2) {
  const float s = static_cast<float>(std::max(amax, static_cast<double>(1e-4f)) / 448.0);
  if (!pow2 || std::isinf(s)) return s;
  int e;
  const double frac = std::frexp(static_cast<double>(s), &e);  // s = frac * 2^e, frac in [0.5, 1)
  return static_cast<float>(frac == 0.5 ? s : std::ldexp(1.0, e));
}

// N(0, 1) samples (never exactly zero in practice), fresh per seed.
inline std::vector<float> normal_vector(int64_t n, uint64_t seed, float stddev = 1.0f) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

inline std::vector<uint8_t> poisoned_codes(int64_t n) { return std::vector<uint8_t>(n, 0x7F); }

// ---- GEMM operands and the float64 reference ---------------------------------------------------
struct Operands {
  int64_t M, N, K, KB;
  std::vector<uint8_t> a, b;
  std::vector<float> sa, sb;
  int64_t R = 128;  // rows of B per b_scale row (Fp8GemmParams::b_scale_rows)
};

// A = x quantized in 1 x 128 tiles, B = w quantized in 128 x 128 blocks (or, with
// b_per_row, in 1 x 128 tiles like an activation: the Wgrad layout), x and w ~ N(0, 1).
inline Operands make_operands(int64_t M, int64_t N, int64_t K, uint64_t seed, bool b_per_row = false) {
  using ts::kern::ceil_div;
  const int64_t R = b_per_row ? 1 : 128;
  Operands o{M,
             N,
             K,
             ceil_div(K, 128),
             poisoned_codes(M * K),
             poisoned_codes(N * K),
             ts::test::poisoned(M * ceil_div(K, 128)),
             ts::test::poisoned(ceil_div(N, R) * ceil_div(K, 128)),
             R};
  const auto x = normal_vector(M * K, seed), w = normal_vector(N * K, seed + 1);
  ts::kern::fp8_quantize_tilewise_cpu({x.data(), o.a.data(), o.sa.data(), M, K, 128, false});
  if (b_per_row)
    ts::kern::fp8_quantize_tilewise_cpu({w.data(), o.b.data(), o.sb.data(), N, K, 128, false});
  else
    ts::kern::fp8_quantize_blockwise_cpu({w.data(), o.b.data(), o.sb.data(), N, K, 128, false});
  return o;
}

// float64 product of the dequantized operands, and sum_k |A B| for error bounds.
struct Reference {
  std::vector<double> out, abs;
};
inline Reference reference(const Operands& o) {
  Reference r{std::vector<double>(o.M * o.N), std::vector<double>(o.M * o.N)};
  for (int64_t m = 0; m < o.M; ++m)
    for (int64_t n = 0; n < o.N; ++n) {
      double s = 0, sa = 0;
      for (int64_t k = 0; k < o.K; ++k) {
        const double t = e4m3_value(o.a[m * o.K + k]) * o.sa[m * o.KB + k / 128] * e4m3_value(o.b[n * o.K + k]) *
                         o.sb[(n / o.R) * o.KB + k / 128];
        s += t;
        sa += std::fabs(t);
      }
      r.out[m * o.N + n] = s;
      r.abs[m * o.N + n] = sa;
    }
  return r;
}

}  // namespace ts::test::fp8
