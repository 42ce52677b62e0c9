// CPU twins of the FP8 quantizers and the dequantizer (contract in kernels/fp8.h).
#include <algorithm>
#include <array>
#include <cmath>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#endif

#include "kernels/common.h"
#include "kernels/fp8.h"

namespace ts::kern {
namespace {

// max |x| over n contiguous floats, NaN ignored. Works on the bit patterns: for non-NaN floats
// the order of |x| is the unsigned order of (bits & 0x7FFFFFFF), so this is an integer max
// reduction, which vectorizes without -ffast-math (a float `a > m ? a : m` reduction does not).
// NaN patterns (above 0x7F800000) count as 0. Max is order-independent: any evaluation order
// (the CUDA kernel's warp tree included) gives the same result.
float amax_span(const float* x, int64_t n) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = fp8_f32_bits(x[i]) & 0x7FFFFFFFu;
    const uint32_t keep = 0u - static_cast<uint32_t>(a <= 0x7F800000u);  // a mask, not a branch
    m = std::max(m, a & keep);
  }
  return fp8_f32_from_bits(m);
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
// 16 lanes of fp8_quantize_value(x, scale) (kernels/fp8.h): the same IEEE division and the same
// integer and fp32 steps of fp8_e4m3_encode, written with AVX-512 masks, then narrowed to bytes.
// GCC's auto-vectorized form of the scalar code runs about 3x slower (the 32-to-8-bit narrowing
// and the select chains). Test: Fp8Codec.VectorQuantizerMatchesScalarForAllFloats, every fp32
// bit pattern as the quotient.
inline __m128i quantize16(__m512 x, __m512 scale) {
  const __m512i u = _mm512_castps_si512(_mm512_div_ps(x, scale));
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80));
  const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
  const __m512i half_even = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(a, _mm512_set1_epi32(0x7FFFF)), half_even), 20);
  const __m512i normal = _mm512_sub_epi32(rounded, _mm512_set1_epi32(120 << 3));
  // |x| * 2^9 + 2^23 rounds |x| / 2^-9 to an integer (exact product, one rounding; as scalar).
  const __m512 t = _mm512_fmadd_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(512.0f), _mm512_set1_ps(8388608.0f));
  const __m512i sub = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B000000));
  const __mmask16 m_sub = _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(0x3C800000));
  const __mmask16 m_sat = _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x43E00000));
  const __mmask16 m_nan = _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7F800000));
  __m512i code = _mm512_mask_blend_epi32(m_sub, normal, sub);
  code = _mm512_mask_blend_epi32(m_sat, code, _mm512_set1_epi32(kFp8E4M3MaxCode));
  code = _mm512_mask_blend_epi32(m_nan, code, _mm512_set1_epi32(kFp8E4M3NaNCode));
  __m512i c = _mm512_or_si512(sign, code);
  // fp8_quantize_value: any NaN code becomes the positive NaN code.
  const __mmask16 m_nan_code =
      _mm512_cmpeq_epi32_mask(_mm512_and_si512(c, _mm512_set1_epi32(0x7F)), _mm512_set1_epi32(0x7F));
  c = _mm512_mask_blend_epi32(m_nan_code, c, _mm512_set1_epi32(kFp8E4M3NaNCode));
  return _mm512_cvtepi32_epi8(c);
}
#endif

}  // namespace

void fp8_quantize_span_cpu(const float* x, uint8_t* q, int64_t n, float scale) {
  int64_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  const __m512 s = _mm512_set1_ps(scale);
  for (; i + 16 <= n; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), quantize16(_mm512_loadu_ps(x + i), s));
#endif
  for (; i < n; ++i) q[i] = fp8_quantize_value(x[i], scale);
}

namespace {
void quantize_span(const float* x, uint8_t* q, int64_t n, float scale) { fp8_quantize_span_cpu(x, q, n, scale); }
}  // namespace

const float* fp8_e4m3_decode_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = fp8_e4m3_decode(static_cast<uint8_t>(c));
    return t;
  }();
  return table.data();
}

void fp8_quantize_tilewise_cpu(const Fp8QuantTilewiseParams& p) {
  TS_KERNEL_ASSERT(p.rows >= 0 && p.cols >= 0 && p.group >= 1);
  const int64_t K = p.cols, G = p.group, KT = ceil_div(K, G);
  // One task per 1 x G tile; a static schedule hands each thread a contiguous run of tiles.
  parallel_for(p.rows * KT, std::max<int64_t>(1, 8192 / G), [&](int64_t t) {
    const int64_t r = t / KT, k0 = (t % KT) * G, len = std::min(G, K - k0);
    const float* x = p.x + r * K + k0;
    const float s = fp8_scale_from_amax(amax_span(x, len), p.pow2_scale);
    p.scale[t] = s;  // scale is [M, KT] row-major, so tile t sits at index t
    quantize_span(x, p.q + r * K + k0, len, s);
  });
}

void fp8_quantize_blockwise_cpu(const Fp8QuantBlockwiseParams& p) {
  TS_KERNEL_ASSERT(p.rows >= 0 && p.cols >= 0 && p.block >= 1);
  const int64_t N = p.rows, K = p.cols, B = p.block, NB = ceil_div(N, B), KB = ceil_div(K, B);
  parallel_for(NB * KB, 1, [&](int64_t t) {
    const int64_t r0 = (t / KB) * B, k0 = (t % KB) * B;
    const int64_t nr = std::min(B, N - r0), len = std::min(B, K - k0);
    float amax = 0.0f;
    for (int64_t r = r0; r < r0 + nr; ++r) {
      const float a = amax_span(p.w + r * K + k0, len);
      amax = a > amax ? a : amax;
    }
    const float s = fp8_scale_from_amax(amax, p.pow2_scale);
    p.scale[t] = s;
    for (int64_t r = r0; r < r0 + nr; ++r) quantize_span(p.w + r * K + k0, p.q + r * K + k0, len, s);
  });
}

void fp8_dequantize_cpu(const Fp8DequantParams& p) {
  TS_KERNEL_ASSERT(p.rows >= 0 && p.cols >= 0 && p.tile_rows >= 1 && p.tile_cols >= 1);
  const int64_t C = p.cols, TC = p.tile_cols, SC = ceil_div(C, TC);
  parallel_for(p.rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)), [&](int64_t r) {
    const float* srow = p.scale + (r / p.tile_rows) * SC;
    const uint8_t* q = p.q + r * C;
    float* out = p.out + r * C;
    for (int64_t c0 = 0; c0 < C; c0 += TC) {
      const float s = srow[c0 / TC];
      const int64_t c1 = std::min(C, c0 + TC);
      for (int64_t c = c0; c < c1; ++c) out[c] = fp8_e4m3_decode(q[c]) * s;  // vectorizes; a LUT would gather
    }
  });
}

}  // namespace ts::kern
