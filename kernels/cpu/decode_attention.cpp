// CPU twin of decode attention (contract in kernels/decode_attention.h). Per sequence b, query s
// and kv head g, the group's query heads score the keys they may see through the skinny GEMM
// (kernels/skinny_gemm.h: the keys are its W rows, strided in the cache), take a softmax with a
// vectorizable exp, and sum the values in position order (vectorized over the value features).
#include "kernels/decode_attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/common.h"
#include "kernels/skinny_gemm.h"

namespace ts::kern {
namespace {

// exp(x) for x <= 0 (scores minus their maximum), within 3 ulp of the exact value (2.6 at worst
// over [-87, 0], checked against double exp): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its
// degree-6 Taylor polynomial, 2^n put into the exponent bits. Plain arithmetic, so the loop over
// scores vectorizes (libm's expf does not, without -ffast-math).
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

}  // namespace

void decode_attention_cpu(const DecodeAttentionParams& p) {
  TS_KERNEL_ASSERT(p.Hk > 0 && p.H % p.Hk == 0 && p.L > 0);
  const int64_t group = p.H / p.Hk, items = p.B * p.S * p.Hk;  // one item: the heads of a kv head
  const int64_t work = p.B * p.S * p.H * p.L * (p.D + p.Dv);
  parallel_for(items, work < (int64_t{1} << 18) ? items : 1, [&](int64_t it) {
    thread_local std::vector<float> scores;
    const int64_t g = it % p.Hk, bs = it / p.Hk, b = bs / p.S;
    const int64_t last = p.last[bs], n = last + 1;
    TS_KERNEL_ASSERT(last >= 0 && last < p.L);
    scores.resize(static_cast<size_t>(group * n));
    const float* q = p.q + (bs * p.H + g * group) * p.D;  // the group's heads, D apart
    const float* k = p.k + b * p.k_batch_stride + g * p.D;
    skinny_gemm_cpu({q, p.D, k, scores.data(), n, group, n, p.D, p.k_row_stride});
    // Locals, not p's fields: a store through a float pointer could alias p.scale as far as the
    // compiler knows, which keeps it from vectorizing the loops below.
    const float scale = p.scale;
    const int64_t Dv = p.Dv, v_row_stride = p.v_row_stride;
    for (int64_t r = 0; r < group; ++r) {
      float* __restrict sc = scores.data() + r * n;
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sc[j] * scale);
      for (int64_t j = 0; j < n; ++j) sc[j] = exp_nonpositive(sc[j] * scale - mx);  // vectorized
      float sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += sc[j];
      const float inv = 1.0f / sum;
      float* __restrict out = p.out + (bs * p.H + g * group + r) * Dv;
      std::fill(out, out + Dv, 0.0f);
      const float* v = p.v + b * p.v_batch_stride + g * Dv;
      for (int64_t j = 0; j < n; ++j) {
        const float w = sc[j] * inv;
        const float* __restrict vj = v + j * v_row_stride;
        for (int64_t d = 0; d < Dv; ++d) out[d] += w * vj[d];
      }
    }
  });
}

}  // namespace ts::kern
