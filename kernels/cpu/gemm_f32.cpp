// The packed fp32 GEMM declared in gemm_f32.h.
//
// Loop nest for C[m, n] += A[m, k] * B[k, n]:
//   for each block of kNC columns and kKC depth:  pack B's block into panels of kNR columns
//                                                 (kKC x kNR floats each, zero padded)
//     for each group of kMR rows of A:            (the A rows' kKC floats stay in L1)
//       for each panel:                           microkernel: kMR x kNR accumulators in
//                                                 registers, one pass over kKC
// Tiles at the edges of C (fewer than kMR rows or kNR columns) go through a padded copy.
#include "kernels/cpu/gemm_f32.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "kernels/common.h"

namespace ts::kern {
namespace {

#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
constexpr int kMR = 12;  // 24 accumulators + 2 B vectors of the 32 zmm registers
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vec vload(const float* p) { return _mm512_load_ps(p); }
inline Vec vloadu(const float* p) { return _mm512_loadu_ps(p); }
inline void vstoreu(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
#elif defined(__AVX2__) && defined(__FMA__)
using Vec = __m256;
constexpr int kLanes = 8;
constexpr int kMR = 6;  // 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vec vload(const float* p) { return _mm256_load_ps(p); }
inline Vec vloadu(const float* p) { return _mm256_loadu_ps(p); }
inline void vstoreu(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
#else
// Portable fallback (no AVX2/FMA): one-float "vectors"; correct, not fast.
struct Vec {
  float v;
};
constexpr int kLanes = 1;
constexpr int kMR = 4;
inline Vec vzero() { return {0.0f}; }
inline Vec vbroadcast(const float* p) { return {*p}; }
inline Vec vload(const float* p) { return {*p}; }
inline Vec vloadu(const float* p) { return {*p}; }
inline void vstoreu(float* p, Vec v) { *p = v.v; }
inline Vec vfma(Vec a, Vec b, Vec c) { return {a.v * b.v + c.v}; }
inline Vec vadd(Vec a, Vec b) { return {a.v + b.v}; }
#endif

constexpr int kNR = 2 * kLanes;  // columns of C per microkernel tile: two vectors
constexpr int64_t kKC = 256;     // depth of a packed block: an A row group is kMR x kKC (12 KiB)
constexpr int64_t kNC = 512;     // columns of a packed block: kKC x kNC floats = 512 KiB, in L2
constexpr int64_t kAlign = 64;
// Row stride of a packed row group of A: not a multiple of 1 KiB, so that the kMR rows do not
// compete for the same L1 sets (rows 4 KiB apart, as in A = x with H = 1024, all map to one set).
constexpr int64_t kAPackLd = kKC + 16;

// Per-thread packing buffer, grown on demand (never shrunk: the sizes are bounded by kKC x kNC).
float* pack_buffer(int64_t floats) {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<float, Free> buf;
  thread_local int64_t capacity = 0;
  if (capacity < floats) {
    const auto bytes = static_cast<size_t>(ceil_div(floats * int64_t{sizeof(float)}, kAlign) * kAlign);
    buf.reset(static_cast<float*>(std::aligned_alloc(kAlign, bytes)));
    if (!buf) throw std::bad_alloc();
    capacity = floats;
  }
  return buf.get();
}

#if defined(__AVX512F__)
// dst[p * kNR + j] = src[j * ld + p] for j, p < 16: sixteen rows of 16 floats transposed in
// registers (unpack floats, unpack pairs, then two rounds of 128-bit lane shuffles).
inline void transpose16_store(const float* src, int64_t ld, float* dst) {
  __m512 r[16], t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld);
#pragma GCC unroll 8
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // Each 128-bit lane L of r[4b + q] now holds column 4L + q of rows 4b .. 4b + 3.
#pragma GCC unroll 4
  for (int i = 0; i < 16; i += 4) {
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512 u0 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x44), u1 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xEE);
    const __m512 v0 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x44);
    const __m512 v1 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xEE);
    _mm512_store_ps(dst + (q + 0) * kNR, _mm512_shuffle_f32x4(u0, v0, 0x88));
    _mm512_store_ps(dst + (q + 4) * kNR, _mm512_shuffle_f32x4(u0, v0, 0xDD));
    _mm512_store_ps(dst + (q + 8) * kNR, _mm512_shuffle_f32x4(u1, v1, 0x88));
    _mm512_store_ps(dst + (q + 12) * kNR, _mm512_shuffle_f32x4(u1, v1, 0xDD));
  }
}
#endif

// Packs B(p0 + p, j0 + j), p < kc, j < nc into panels of kNR columns: panel q holds
// dst[q * kc * kNR + p * kNR + j'] = B(p0 + p, j0 + q * kNR + j'), zero past nc.
void pack_b(const GemmF32& g, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  for (int64_t q = 0; q * kNR < nc; ++q) {
    float* panel = dst + q * kc * kNR;
    const int64_t jq = j0 + q * kNR, width = std::min<int64_t>(kNR, nc - q * kNR);
    if (g.b_cs == 1) {  // rows of B are contiguous: copy row pieces (a fixed size inlines)
      for (int64_t p = 0; p < kc; ++p) {
        float* d = panel + p * kNR;
        const float* src = g.b + (p0 + p) * g.b_rs + jq;
        if (width == kNR) {
          std::memcpy(d, src, sizeof(float) * kNR);
        } else {
          std::memcpy(d, src, sizeof(float) * width);
          std::fill(d + width, d + kNR, 0.0f);
        }
      }
    } else {  // columns of B are contiguous (b_rs == 1): transpose
      int64_t p = 0;
#if defined(__AVX512F__)
      if (width == kNR)  // whole panels: 16 x 16 blocks transposed in registers
        for (; p + 16 <= kc; p += 16) {
          transpose16_store(g.b + jq * g.b_cs + p0 + p, g.b_cs, panel + p * kNR);
          transpose16_store(g.b + (jq + 16) * g.b_cs + p0 + p, g.b_cs, panel + p * kNR + 16);
        }
#endif
      if (p == kc) continue;
      for (int64_t j = 0; j < width; ++j) {
        const float* s = g.b + (jq + j) * g.b_cs + p0;
        for (int64_t pp = p; pp < kc; ++pp) panel[pp * kNR + j] = s[pp];
      }
      for (int64_t j = width; j < kNR; ++j)
        for (int64_t pp = p; pp < kc; ++pp) panel[pp * kNR + j] = 0.0f;
    }
  }
}

// Copies rows [i0, i0 + mr) of A, depth [p0, p0 + kc), into dst, zero padded to kMR rows: with
// rows contiguous in A (a_cs == 1) as dst[i * kAPackLd + p], otherwise as dst[p * kMR + i]. The
// copy costs about 1/(2 kNC / kNR) of the microkernel work that reuses it.
void pack_a(const GemmF32& g, int64_t i0, int64_t mr, int64_t p0, int64_t kc, float* dst) {
  const float* a = g.a + i0 * g.a_rs + p0 * g.a_cs;
  if (g.a_cs == 1) {
    for (int64_t i = 0; i < kMR; ++i) {
      float* d = dst + i * kAPackLd;
      if (i < mr)
        std::memcpy(d, a + i * g.a_rs, sizeof(float) * kc);
      else
        std::fill(d, d + kc, 0.0f);
    }
  } else {
    for (int64_t p = 0; p < kc; ++p) {
      float* d = dst + p * kMR;
      if (mr == kMR) {
        std::memcpy(d, a + p * g.a_cs, sizeof(float) * kMR);
      } else {
        std::memcpy(d, a + p * g.a_cs, sizeof(float) * mr);
        std::fill(d + mr, d + kMR, 0.0f);
      }
    }
  }
}

// c[i * ldc + j] (+)= sum_p A(i, p) * panel[p * kNR + j] for i < kMR, j < kNR, in order of p.
// kARows: A(i, p) = a[i * kAPackLd + p] (a packed row group); otherwise A(i, p) = a[p * lda + i].
template <bool kARows>
void micro(int64_t kc, const float* a, int64_t lda, const float* panel, float* c, int64_t ldc, bool accumulate) {
  Vec c0[kMR], c1[kMR];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) c0[i] = c1[i] = vzero();
  if constexpr (kARows) {
    (void)lda;  // kAPackLd: a constant stride lets every row be a fixed offset from one pointer
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; ++p) {
      const Vec b0 = vload(panel + p * kNR), b1 = vload(panel + p * kNR + kLanes);
      // The panel streams from L2: ask for it 8 steps ahead (about 15% at kc = 256 on this CPU).
      __builtin_prefetch(panel + p * kNR + 8 * kNR);
      __builtin_prefetch(panel + p * kNR + 8 * kNR + 16);
#pragma GCC unroll 16
      for (int i = 0; i < kMR; ++i) {
        const Vec ai = vbroadcast(a + i * kAPackLd + p);
        c0[i] = vfma(ai, b0, c0[i]);
        c1[i] = vfma(ai, b1, c1[i]);
      }
    }
  } else {
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; ++p) {
      const float* ap = a + p * lda;
      const Vec b0 = vload(panel + p * kNR), b1 = vload(panel + p * kNR + kLanes);
      __builtin_prefetch(panel + p * kNR + 8 * kNR);
      __builtin_prefetch(panel + p * kNR + 8 * kNR + 16);
#pragma GCC unroll 16
      for (int i = 0; i < kMR; ++i) {
        const Vec ai = vbroadcast(ap + i);
        c0[i] = vfma(ai, b0, c0[i]);
        c1[i] = vfma(ai, b1, c1[i]);
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i) {
    float* ci = c + i * ldc;
    if (accumulate) {
      c0[i] = vadd(c0[i], vloadu(ci));
      c1[i] = vadd(c1[i], vloadu(ci + kLanes));
    }
    vstoreu(ci, c0[i]);
    vstoreu(ci + kLanes, c1[i]);
  }
}

}  // namespace

int gemm_f32_tile_rows() { return kMR; }
int gemm_f32_tile_cols() { return kNR; }

void gemm_f32(const GemmF32& g) {
  TS_KERNEL_ASSERT(g.m >= 0 && g.n >= 0 && g.k >= 0);
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {
    if (!g.accumulate)
      for (int64_t i = 0; i < g.m; ++i) std::fill(g.c + i * g.ldc, g.c + i * g.ldc + g.n, 0.0f);
    return;
  }
  TS_KERNEL_ASSERT(g.a_cs == 1 || g.a_rs == 1);
  TS_KERNEL_ASSERT(g.b_cs == 1 || g.b_rs == 1);
  const bool a_rows = g.a_cs == 1;
  float* packed = pack_buffer(std::min(g.k, kKC) * ceil_div(std::min(g.n, kNC), kNR) * kNR);
  alignas(kAlign) float a_pack[kMR * kAPackLd];  // one row group of A
  alignas(kAlign) float c_pad[kMR * kNR];        // an edge tile of C
  for (int64_t j0 = 0; j0 < g.n; j0 += kNC) {
    const int64_t nc = std::min(kNC, g.n - j0);
    for (int64_t p0 = 0; p0 < g.k; p0 += kKC) {
      const int64_t kc = std::min(kKC, g.k - p0);
      const bool accumulate = g.accumulate || p0 > 0;
      pack_b(g, p0, kc, j0, nc, packed);
      for (int64_t i0 = 0; i0 < g.m; i0 += kMR) {
        const int64_t mr = std::min<int64_t>(kMR, g.m - i0);
        pack_a(g, i0, mr, p0, kc, a_pack);
        for (int64_t jr = 0; jr < nc; jr += kNR) {
          const int64_t nr = std::min<int64_t>(kNR, nc - jr);
          const float* panel = packed + jr * kc;
          float* c = g.c + i0 * g.ldc + j0 + jr;
          const bool full = mr == kMR && nr == kNR;
          float* dst = full ? c : c_pad;
          const int64_t ldd = full ? g.ldc : kNR;
          if (!full) {  // the tile's C (or zeros) into the padded copy, so it can always accumulate
            std::fill(c_pad, c_pad + kMR * kNR, 0.0f);
            if (accumulate)
              for (int64_t i = 0; i < mr; ++i) std::copy(c + i * g.ldc, c + i * g.ldc + nr, c_pad + i * kNR);
          }
          const bool acc = accumulate || !full;
          if (a_rows)
            micro<true>(kc, a_pack, kAPackLd, panel, dst, ldd, acc);
          else
            micro<false>(kc, a_pack, kMR, panel, dst, ldd, acc);
          if (!full)
            for (int64_t i = 0; i < mr; ++i) std::copy(c_pad + i * kNR, c_pad + i * kNR + nr, c + i * g.ldc);
        }
      }
    }
  }
}

}  // namespace ts::kern
