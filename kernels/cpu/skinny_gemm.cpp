// CPU twin of the skinny GEMM (contract in kernels/skinny_gemm.h).
//
// y[i][j] is the dot product of row i of x and row j of W, both contiguous along k, so the kernel
// takes W as stored. Tiles of R rows x C columns keep R * C eight-lane accumulators in registers:
// per step of eight k it loads R vectors of x and C of W and issues R * C FMAs. 3 x 4 fills the
// 16 AVX2 registers (12 accumulators, 3 x, 1 W); a single row takes 8 columns, for enough
// independent FMA chains to cover their latency. Columns are walked in blocks of 8, every row
// group inside a block, so a block of W stays in L1 while all rows pass over it.
#include "kernels/skinny_gemm.h"

#include <algorithm>
#include <cmath>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "kernels/common.h"

namespace ts::kern {
namespace {

constexpr int kLanes = 8;
constexpr int kBlockCols = 8;

#if defined(__AVX2__) && defined(__FMA__)
using Vec = __m256;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
// Reduces up to 8 accumulators at once (the rest zero vectors): out[c] = lanes of v[c] summed as
// ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)), the same order for every c and every count.
inline void hsum8(const Vec* v, int count, float* out) {
  Vec a[8];
  for (int c = 0; c < 8; ++c) a[c] = c < count ? v[c] : vzero();
  const Vec t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const Vec t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const Vec u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);  // lanes 0-3 and 4-7 of each
  const Vec r = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, r);
  std::copy(tmp, tmp + count, out);
}
inline float fma1(float a, float b, float c) { return std::fma(a, b, c); }
#else
// Portable fallback: the same eight partial sums and the same reduction order, in scalars.
struct Vec {
  float l[kLanes];
};
inline Vec vzero() { return Vec{}; }
inline Vec vload(const float* p) {
  Vec v;
  std::copy(p, p + kLanes, v.l);
  return v;
}
inline Vec vfma(Vec a, Vec b, Vec c) {
  for (int i = 0; i < kLanes; ++i) c.l[i] = a.l[i] * b.l[i] + c.l[i];
  return c;
}
inline void hsum8(const Vec* v, int count, float* out) {
  for (int c = 0; c < count; ++c) {
    const float* l = v[c].l;
    out[c] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  }
}
inline float fma1(float a, float b, float c) { return a * b + c; }
#endif

// Rows i0 .. i0+R-1 times columns j0 .. j0+C-1.
template <int R, int C>
void tile(const SkinnyGemmParams& p, int64_t i0, int64_t j0) {
  const int64_t K = p.k, K8 = K / kLanes * kLanes;
  const float* xr[R];
  const float* wr[C];
  for (int r = 0; r < R; ++r) xr[r] = p.x + (i0 + r) * p.ldx;
  const int64_t ldw = p.ldw ? p.ldw : K;
  for (int c = 0; c < C; ++c) wr[c] = p.w + (j0 + c) * ldw;
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = vzero();
  for (int64_t q = 0; q < K8; q += kLanes) {
    Vec xv[R];
    for (int r = 0; r < R; ++r) xv[r] = vload(xr[r] + q);
    for (int c = 0; c < C; ++c) {
      const Vec wv = vload(wr[c] + q);
      for (int r = 0; r < R; ++r) acc[r][c] = vfma(xv[r], wv, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float* y = p.y + (i0 + r) * p.ldy + j0;
    hsum8(acc[r], C, y);
    for (int c = 0; c < C; ++c)
      for (int64_t q = K8; q < K; ++q) y[c] = fma1(xr[r][q], wr[c][q], y[c]);
  }
}

// Rows [i0, i0 + rows) (rows <= 3) times columns [j0, j0 + cols) (cols <= kBlockCols).
template <int R>
void row_group(const SkinnyGemmParams& p, int64_t i0, int64_t j0, int64_t cols) {
  if constexpr (R == 1) {
    switch (cols) {
      case 8:
        return tile<1, 8>(p, i0, j0);
      case 7:
        return tile<1, 7>(p, i0, j0);
      case 6:
        return tile<1, 6>(p, i0, j0);
      case 5:
        return tile<1, 5>(p, i0, j0);
      case 4:
        return tile<1, 4>(p, i0, j0);
      case 3:
        return tile<1, 3>(p, i0, j0);
      case 2:
        return tile<1, 2>(p, i0, j0);
      default:
        return tile<1, 1>(p, i0, j0);
    }
  } else {
    for (int64_t j = j0; j < j0 + cols; j += 4) {
      switch (std::min<int64_t>(4, j0 + cols - j)) {
        case 4:
          tile<R, 4>(p, i0, j);
          break;
        case 3:
          tile<R, 3>(p, i0, j);
          break;
        case 2:
          tile<R, 2>(p, i0, j);
          break;
        default:
          tile<R, 1>(p, i0, j);
          break;
      }
    }
  }
}

void column_block(const SkinnyGemmParams& p, int64_t b) {
  const int64_t j0 = b * kBlockCols, cols = std::min<int64_t>(kBlockCols, p.n - j0);
  int64_t i = 0;
  for (; i + 3 <= p.m; i += 3) row_group<3>(p, i, j0, cols);
  if (p.m - i == 2) row_group<2>(p, i, j0, cols);
  if (p.m - i == 1) row_group<1>(p, i, j0, cols);
}

}  // namespace

void skinny_gemm_cpu(const SkinnyGemmParams& p) {
  TS_KERNEL_ASSERT(p.m >= 0 && p.n >= 0 && p.k >= 0);
  TS_KERNEL_ASSERT(p.m == 0 || p.ldx >= p.k);
  TS_KERNEL_ASSERT(p.m == 0 || p.ldy >= p.n);
  TS_KERNEL_ASSERT(p.ldw == 0 || p.ldw >= p.k);
  if (p.m == 0 || p.n == 0) return;
  const int64_t blocks = ceil_div(p.n, int64_t{kBlockCols});
  const bool serial = p.m * p.n * p.k < kSkinnyGemmParallelWork;
  parallel_for(blocks, serial ? blocks : 1, [&](int64_t b) { column_block(p, b); });
}

}  // namespace ts::kern
