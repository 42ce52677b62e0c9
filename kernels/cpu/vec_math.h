// Element-wise math written as plain arithmetic, so that loops over it vectorize (libm's expf
// does not vectorize without -ffast-math, which the kernels do not use).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace ts::kern {

// exp(x) for x <= 0, within 3 ulp of the exact value (2.6 at worst over [-87, 0], checked against
// double exp): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its degree-6 Taylor polynomial, 2^n
// put into the exponent bits. Below -87 (and for NaN) it returns exp(-87) ~ 1.6e-38.
inline float exp_nonpositive(float x) {
  x = x > -87.0f ? x : -87.0f;  // below, exp underflows to (nearly) 0 anyway
  // Round to nearest by adding and subtracting 1.5 * 2^23 (exact for |t| < 2^22): plain
  // arithmetic, where nearbyint would be a branchy call the vectorizer gives up on.
  constexpr float kRound = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // ln2 split hi + lo
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);  // 2^n
  return p * scale;
}

// sigmoid(g) = 1 / (1 + exp(-g)), evaluated through exp(-|g|) so that exp never overflows:
// 1 / (1 + e) for g >= 0, e / (1 + e) below. Where exp(-|g|) underflows (|g| > 87) or g is NaN,
// e is taken as 0, so sigmoid(-inf) = 0, sigmoid(+inf) = 1 and sigmoid(NaN) = 0 (callers multiply
// by g, which carries the NaN).
inline float sigmoid(float g) {
  const float a = -std::fabs(g);
  const float e = a >= -87.0f ? exp_nonpositive(a) : 0.0f;
  return (g >= 0.0f ? 1.0f : e) / (1.0f + e);
}

}  // namespace ts::kern
