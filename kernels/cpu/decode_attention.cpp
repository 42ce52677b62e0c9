// CPU twin of decode attention (contract in kernels/decode_attention.h): per query head, scores
// into a buffer, the softmax, then the weighted sum of values, all in fp32 loops that the
// compiler vectorizes over the feature dimension.
#include "kernels/decode_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common.h"

namespace ts::kern {
namespace {

// q . k over n features as eight interleaved partial sums (the compiler keeps them in one vector
// register), reduced in a fixed order, then the n % 8 tail.
inline float dot(const float* q, const float* k, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t n8 = n / 8 * 8;
  for (int64_t d = 0; d < n8; d += 8)
    for (int l = 0; l < 8; ++l) acc[l] += q[d + l] * k[d + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (int64_t d = n8; d < n; ++d) s += q[d] * k[d];
  return s;
}

}  // namespace

void decode_attention_cpu(const DecodeAttentionParams& p) {
  TS_KERNEL_ASSERT(p.Hk > 0 && p.H % p.Hk == 0 && p.L > 0);
  const int64_t group = p.H / p.Hk, items = p.B * p.S * p.H;
  const int64_t work = items * p.L * (p.D + p.Dv);
  parallel_for(items, work < (int64_t{1} << 18) ? items : 1, [&](int64_t it) {
    thread_local std::vector<float> scores;
    const int64_t h = it % p.H, bs = it / p.H, b = bs / p.S;
    const int64_t g = h / group, last = p.last[bs];
    TS_KERNEL_ASSERT(last >= 0 && last < p.L);
    const float* q = p.q + it * p.D;
    float* out = p.out + it * p.Dv;
    scores.resize(static_cast<size_t>(last + 1));
    float mx = -INFINITY;
    for (int64_t j = 0; j <= last; ++j) {
      const float* k = p.k + b * p.k_batch_stride + j * p.k_row_stride + g * p.D;
      scores[j] = dot(q, k, p.D) * p.scale;
      mx = std::max(mx, scores[j]);
    }
    float sum = 0;
    for (int64_t j = 0; j <= last; ++j) {
      scores[j] = std::exp(scores[j] - mx);
      sum += scores[j];
    }
    std::fill(out, out + p.Dv, 0.0f);
    for (int64_t j = 0; j <= last; ++j) {
      const float* v = p.v + b * p.v_batch_stride + j * p.v_row_stride + g * p.Dv;
      const float w = scores[j] / sum;
      for (int64_t d = 0; d < p.Dv; ++d) out[d] += w * v[d];
    }
  });
}

}  // namespace ts::kern
