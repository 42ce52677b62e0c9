// CPU twins of the MoE permute / unpermute and their backward pieces (contracts in kernels/moe.h).
// All of them move whole rows of H floats; they are memory-bound, so the work is about traffic:
// threads over rows or tokens, contiguous vectorizable inner loops, and non-temporal stores for
// outputs far larger than the caches.
#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "kernels/common.h"
#include "kernels/moe.h"

namespace ts::kern {
namespace {

// Rows worth threading: about 32 K floats of traffic per call keeps the fork cheap relative to work.
int64_t row_grain(int64_t width) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(width, 1)); }

// Outputs at least this large are written with non-temporal stores: they cannot stay in cache
// anyway, and skipping the read-for-ownership saves a third of the traffic (permute of
// T=32768, H=1024, K=8 writes 1 GiB).
constexpr int64_t kStreamBytes = int64_t{32} << 20;

bool stream_output(int64_t rows, int64_t H) { return rows * H * int64_t{sizeof(float)} >= kStreamBytes; }

// d[i] = w * s[i] (or s[i] when !kScale) for i < n. With `stream`, the aligned middle of the row is
// written with non-temporal stores and fenced, so the row is visible to any thread afterwards.
template <bool kScale>
void store_row(float* __restrict__ d, const float* __restrict__ s, float w, int64_t n, bool stream) {
  int64_t i = 0;
#if defined(__AVX__)
  if (stream) {
    // Whole 64-byte lines only: a line written partly by normal and partly by streaming stores
    // is slow, so the unaligned head and the tail use normal stores.
    for (; i < n && (reinterpret_cast<uintptr_t>(d + i) & 63) != 0; ++i) d[i] = kScale ? w * s[i] : s[i];
    const __m256 wv = _mm256_set1_ps(w);
    for (; i + 16 <= n; i += 16) {
      __m256 v0 = _mm256_loadu_ps(s + i), v1 = _mm256_loadu_ps(s + i + 8);
      if constexpr (kScale) {
        v0 = _mm256_mul_ps(wv, v0);
        v1 = _mm256_mul_ps(wv, v1);
      }
      _mm256_stream_ps(d + i, v0);
      _mm256_stream_ps(d + i + 8, v1);
    }
    _mm_sfence();
  }
#endif
  if constexpr (kScale) {
    for (; i < n; ++i) d[i] = w * s[i];
  } else {
    if (n > i) std::memcpy(d + i, s + i, sizeof(float) * (n - i));
  }
}

// dot(a, b) over n floats with 16 independent fp32 lanes (vectorizes without -ffast-math), lanes
// folded pairwise: a fixed summation order, so results do not depend on threads.
float dot(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0] + tail;
}

// out[t] = sum_k scale(t, k) * src[token_to_sorted[t*K + k]], summed in order k = 0..K-1; the scale
// is 1 when weights is nullptr (the permute backward). The row is done in chunks of kChunk columns
// with all K source rows read side by side, which keeps K memory streams in flight (about 15%
// faster than one whole source row after another at H=1024, K=8); the order over k per element
// is unchanged.
void gather_sum(const float* src, const int64_t* token_to_sorted, const float* weights, float* out, int64_t T,
                int64_t K, int64_t H) {
  constexpr int64_t kChunk = 64;
  parallel_for(T, row_grain(H * std::max<int64_t>(K, 1)), [&](int64_t t) {
    float* __restrict__ o = out + t * H;
    if (K == 0) {
      std::fill(o, o + H, 0.0f);
      return;
    }
    const int64_t* rows = token_to_sorted + t * K;
    const float* wt = weights ? weights + t * K : nullptr;
    for (int64_t h0 = 0; h0 < H; h0 += kChunk) {
      const int64_t n = std::min(kChunk, H - h0);
      float* __restrict__ oc = o + h0;
      const float* __restrict__ r0 = src + rows[0] * H + h0;
      if (wt) {
        const float w0 = wt[0];
        for (int64_t h = 0; h < n; ++h) oc[h] = w0 * r0[h];
      } else {
        for (int64_t h = 0; h < n; ++h) oc[h] = r0[h];
      }
      for (int64_t k = 1; k < K; ++k) {
        const float* __restrict__ rk = src + rows[k] * H + h0;
        if (wt) {
          const float wk = wt[k];
          for (int64_t h = 0; h < n; ++h) oc[h] += wk * rk[h];
        } else {
          for (int64_t h = 0; h < n; ++h) oc[h] += rk[h];
        }
      }
    }
  });
}

}  // namespace

void moe_permute_cpu(const MoePermuteParams& p) {
  const int64_t K = p.topk, H = p.hidden, M = p.tokens * K;
  const bool stream = stream_output(M, H);
  if (p.token_to_sorted) {
    parallel_for(p.tokens, row_grain(H * std::max<int64_t>(K, 1)), [&](int64_t t) {
      for (int64_t k = 0; k < K; ++k)
        store_row<false>(p.x_sorted + p.token_to_sorted[t * K + k] * H, p.x + t * H, 1.0f, H, stream);
    });
    return;
  }
  parallel_for(M, row_grain(H), [&](int64_t r) {
    const int64_t t = p.sorted_to_token[r] / K;
    store_row<false>(p.x_sorted + r * H, p.x + t * H, 1.0f, H, stream);
  });
}

void moe_permute_backward_cpu(const MoePermuteBackwardParams& p) {
  gather_sum(p.grad_x_sorted, p.token_to_sorted, nullptr, p.grad_x, p.tokens, p.topk, p.hidden);
}

void moe_unpermute_cpu(const MoeUnpermuteParams& p) {
  TS_KERNEL_ASSERT(p.tokens * p.topk == 0 || p.topk_weights != nullptr);
  gather_sum(p.y_sorted, p.token_to_sorted, p.topk_weights, p.y, p.tokens, p.topk, p.hidden);
}

void moe_unpermute_backward_cpu(const MoeUnpermuteBackwardParams& p) {
  const int64_t K = p.topk, H = p.hidden;
  const bool empty = p.tokens * K == 0;  // empty tensors may come with null pointers
  TS_KERNEL_ASSERT(empty || !p.grad_y_sorted || p.topk_weights);
  TS_KERNEL_ASSERT(empty || !p.grad_topk_weights || p.y_sorted);
  const bool stream = stream_output(p.tokens * K, H);
  parallel_for(p.tokens, row_grain(H * std::max<int64_t>(K, 1)), [&](int64_t t) {
    const float* gy = p.grad_y + t * H;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = t * K + k, r = p.token_to_sorted[s];
      if (p.grad_y_sorted) store_row<true>(p.grad_y_sorted + r * H, gy, p.topk_weights[s], H, stream);
      if (p.grad_topk_weights) p.grad_topk_weights[s] = dot(gy, p.y_sorted + r * H, H);
    }
  });
}

}  // namespace ts::kern
