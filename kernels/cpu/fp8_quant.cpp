// CPU twins of the FP8 quantizers and the dequantizer (contract in kernels/fp8.h).
#include <algorithm>
#include <array>
#include <cmath>

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

void quantize_span(const float* x, uint8_t* q, int64_t n, float scale) {
  for (int64_t i = 0; i < n; ++i) q[i] = fp8_quantize_value(x[i], scale);
}

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
