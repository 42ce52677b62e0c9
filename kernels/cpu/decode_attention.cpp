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
#include "kernels/cpu/vec_math.h"
#include "kernels/skinny_gemm.h"

namespace ts::kern {

void decode_attention_cpu(const DecodeAttentionParams& p) {
  TS_KERNEL_ASSERT(p.Hk > 0 && p.H % p.Hk == 0 && p.L > 0);
  const int64_t group = p.H / p.Hk, items = p.B * p.S * p.Hk;  // one item: the heads of a kv head
  const int64_t work = p.B * p.S * p.H * p.L * (p.D + p.Dv);
  // One query over a short context stays on the calling thread; a speculative step's few queries
  // are split (2^16: 8.6 against 12.4 us for 3 queries of 4 heads over 112 positions, 2 threads
  // against 1 on a 2-core Xeon).
  parallel_for(items, work < (int64_t{1} << 16) ? items : 1, [&](int64_t it) {
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
