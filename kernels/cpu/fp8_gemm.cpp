// CPU emulator of the scaled FP8 GEMM with a limited-precision accumulator (contract and exact
// semantics in kernels/fp8.h).
//
// Layout of the work: B is decoded once into column panels of kLanes = 64 columns, stored
// [panel][k][64] so that one k step of a panel is 64 contiguous floats; a task is one (panel,
// row m) pair and keeps 64 independent accumulators, one per output column, which the compiler
// turns into vector lanes (the accumulation chain along k stays strictly sequential per column,
// as the semantics require). Each lane carries its own scale product sab (one value for the
// whole panel with 128-row B blocks, since 64 divides 128; one per column with per-row B scales).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common.h"
#include "kernels/fp8.h"

namespace ts::kern {
namespace {

constexpr int kLanes = 64;
static_assert(kFp8GemmBlock % kLanes == 0, "a panel must not straddle two B scale blocks");

// T_b: clear the low 23 - b mantissa bits (truncation toward zero in sign-magnitude).
inline float truncate_bits(float v, uint32_t keep) { return fp8_f32_from_bits(fp8_f32_bits(v) & keep); }

// Truncate u toward zero to a grid `sh` bits above its own b-bit ulp; sh >= 24 clears the
// implicit bit too, leaving a signed zero.
inline uint32_t truncate_below(uint32_t u, int32_t sh) {
  const int32_t s = std::min(sh, 31);
  return sh >= 24 ? (u & 0x80000000u) : (u & (0xFFFFFFFFu << s));
}

// kAlignTruncate: align acc and x to the larger exponent e, dropping bits below 2^(e - b), add,
// then T_b. Exponents are the biased fields, with fp32 subnormals (field 0) sharing field 1's grid.
inline float align_truncate_add(float acc, float x, int32_t drop, uint32_t keep) {
  const uint32_t ua = fp8_f32_bits(acc), ux = fp8_f32_bits(x);
  const int32_t ea = std::max<int32_t>((ua >> 23) & 0xFF, 1), ex = std::max<int32_t>((ux >> 23) & 0xFF, 1);
  const int32_t e = std::max(ea, ex);
  const float a2 = fp8_f32_from_bits(truncate_below(ua, drop + e - ea));
  const float x2 = fp8_f32_from_bits(truncate_below(ux, drop + e - ex));
  return truncate_bits(a2 + x2, keep);
}

// acc[j] = step(acc[j], a[k], panel[k][j], sab[j]) for k in [k0, k1): the hot loop, vectorized
// over j.
template <class Step>
inline void accumulate(float* __restrict acc, const float* __restrict arow, const float* __restrict panel,
                       const float* __restrict sab, int64_t k0, int64_t k1, Step step) {
  for (int64_t k = k0; k < k1; ++k) {
    const float a = arow[k];
    const float* __restrict bk = panel + k * kLanes;
    for (int j = 0; j < kLanes; ++j) acc[j] = step(acc[j], a, bk[j], sab[j]);
  }
}

struct GemmShape {
  int64_t M, N, K, KB;
};

// One (panel, row) task: writes out_row[0..64) (fp32, before any clipping to N).
void gemm_task(const Fp8GemmParams& p, const GemmShape& s, const float* arow, const float* panel, int64_t panel_idx,
               int64_t m, float* out_row) {
  const int bits = p.accum_mantissa_bits;
  const int32_t drop = 23 - bits;
  const uint32_t keep = 0xFFFFFFFFu << drop;
  const bool align = p.accum_model == Fp8AccumModel::kAlignTruncate;
  const int64_t P = p.promote_interval;
  const int64_t n0 = panel_idx * kLanes;
  const float* a_scale = p.a_scale + m * s.KB;
  // B scale rows of this panel's lanes: one block row for every lane, or one row per column
  // (lanes past N read row 0; their products are zeros and their outputs are dropped).
  int64_t sb_row[kLanes];
  for (int j = 0; j < kLanes; ++j) sb_row[j] = n0 + j < s.N ? (n0 + j) / p.b_scale_rows : 0;
  float acc[kLanes], out[kLanes], sab[kLanes];
  std::fill(acc, acc + kLanes, 0.0f);
  std::fill(out, out + kLanes, 0.0f);
  for (int64_t kb = 0; kb < s.KB; ++kb) {
    for (int j = 0; j < kLanes; ++j) sab[j] = a_scale[kb] * p.b_scale[sb_row[j] * s.KB + kb];
    const int64_t g0 = kb * kFp8GemmBlock, g1 = std::min(s.K, g0 + kFp8GemmBlock);
    if (P == 0) {  // one limited accumulator over all of K, fed scaled products
      if (align)
        accumulate(acc, arow, panel, sab, g0, g1, [=](float c, float a, float b, float sc) {
          return align_truncate_add(c, (a * b) * sc, drop, keep);
        });
      else
        accumulate(acc, arow, panel, sab, g0, g1,
                   [=](float c, float a, float b, float sc) { return truncate_bits(std::fma(a * b, sc, c), keep); });
      continue;
    }
    for (int64_t w0 = g0; w0 < g1;) {  // promotion windows inside this scale group
      const int64_t w1 = std::min(g1, (w0 / P + 1) * P);
      std::fill(acc, acc + kLanes, 0.0f);
      if (align)
        accumulate(acc, arow, panel, sab, w0, w1,
                   [=](float c, float a, float b, float) { return align_truncate_add(c, a * b, drop, keep); });
      else  // a * b is exact, so fma(a, b, c) is fl32(c + a*b)
        accumulate(acc, arow, panel, sab, w0, w1,
                   [=](float c, float a, float b, float) { return truncate_bits(std::fma(a, b, c), keep); });
      for (int j = 0; j < kLanes; ++j) out[j] = std::fma(acc[j], sab[j], out[j]);
      w0 = w1;
    }
  }
  const float* result = P == 0 ? acc : out;
  std::copy(result, result + kLanes, out_row);
}

}  // namespace

void fp8_gemm_nt_cpu(const Fp8GemmParams& p) {
  TS_KERNEL_ASSERT(p.m >= 0 && p.n >= 0 && p.k >= 0);
  TS_KERNEL_ASSERT(p.promote_interval >= 0);
  TS_KERNEL_ASSERT(p.accum_mantissa_bits >= 1 && p.accum_mantissa_bits <= 23);
  TS_KERNEL_ASSERT(p.b_scale_rows == kFp8GemmBlock || p.b_scale_rows == 1);
  const GemmShape s{p.m, p.n, p.k, ceil_div(p.k, kFp8GemmBlock)};
  if (s.M == 0 || s.N == 0) return;  // an empty output (whose pointer may be null)
  TS_KERNEL_ASSERT(p.out != nullptr || p.out_bf16 != nullptr);
  const int64_t NP = ceil_div(s.N, kLanes);
  const float* lut = fp8_e4m3_decode_table();

  // Decode once: A row-major [M, K]; B as zero-padded column panels [NP][K][kLanes].
  std::vector<float> a(s.M * s.K), panels(NP * s.K * kLanes);
  parallel_for(s.M, std::max<int64_t>(1, 4096 / std::max<int64_t>(s.K, 1)), [&](int64_t m) {
    for (int64_t k = 0; k < s.K; ++k) a[m * s.K + k] = lut[p.a[m * s.K + k]];
  });
  parallel_for(NP, 0, [&](int64_t np) {
    float* panel = panels.data() + np * s.K * kLanes;
    for (int j = 0; j < kLanes; ++j) {
      const int64_t n = np * kLanes + j;
      const uint8_t* brow = p.b + n * s.K;
      for (int64_t k = 0; k < s.K; ++k) panel[k * kLanes + j] = n < s.N ? lut[brow[k]] : 0.0f;
    }
  });

  // Tasks ordered panel-major, so a thread's contiguous run of tasks reuses one panel from cache.
  parallel_for(NP * s.M, 0, [&](int64_t t) {
    const int64_t np = t / s.M, m = t % s.M;
    float row[kLanes];
    gemm_task(p, s, a.data() + m * s.K, panels.data() + np * s.K * kLanes, np, m, row);
    const int64_t n0 = np * kLanes, nn = std::min<int64_t>(kLanes, s.N - n0);
    if (p.out)
      for (int64_t j = 0; j < nn; ++j) p.out[m * s.N + n0 + j] = row[j];
    if (p.out_bf16)
      for (int64_t j = 0; j < nn; ++j) p.out_bf16[m * s.N + n0 + j] = fp8_f32_to_bf16_bits(row[j]);
  });
}

}  // namespace ts::kern
