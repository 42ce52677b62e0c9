// CUDA MLA decode kernel (contract in kernels/mla_decode.h; CPU twin in
// kernels/cpu/mla_decode.cpp).
//
// Design (flash-decoding over a paged cache, tensor cores via mma.sync m16n8k16, fp32 accumulate):
// - Split kernel: one CTA per (group of kRows = 32 query rows, chunk of kDvChunk output columns,
//   KV split, sequence). The rows r = s * H + h of a sequence share every cache row, so a CTA
//   stages kTileN cache rows at a time in shared memory (cp.async, double-buffered) and uses each
//   for all its rows. Per tile: S = Q K^T by the 8 warps (warp w: m-tile w / 4, n-tile w % 4),
//   an online softmax in base 2 over S (8 threads per row), then O += P V with P rounded to the
//   input dtype; warp w owns output columns [64 w, 64 w + 64) of the CTA's column chunk.
// - Combine kernel (only when a sequence is split): merges the per-split (out / l, lse) with
//   weights exp(lse_split - lse), as FlashMLA does.
// Only positions below seq_len are ever loaded (and only their block_table entries read);
// positions of a tile past the split's end are zero-filled in shared memory, never fetched.
//
// Non-finite inputs follow the contract (kernels/mla_decode.h), at no cost to finite ones:
// - the running max is NaN-propagating (max.NaN), so a NaN score makes m NaN and the row NaN;
//   m = +inf (a +inf score) gives out NaN and lse +inf; both are written as such at the end;
// - a row that saw nothing (l == 0) writes 0 and -inf, never o / l;
// - a masked position still enters the P V product with P = 0, and 0 * NaN = NaN. Positions are
//   masked inside a sequence only for its first S_q - 1 queries (causality among the new tokens),
//   so a tile that holds such positions checks their values in shared memory and, when one is
//   not finite, takes a scalar P V that skips every row's masked positions;
// - the combine kernel makes a row NaN when any split's lse is NaN and (out NaN, lse +inf) when
//   the largest is +inf, and adds every split that saw something (weight 0 included, so an inf
//   value is not dropped by an underflowing weight).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/mla_decode.h"

namespace ts::kern {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 32;      // query rows per CTA: two m16 tiles
constexpr int kTileN = 32;     // cache positions per pipeline stage: four n8 tiles, two k16 steps
constexpr int kDvChunk = 512;  // output columns per CTA: 64 (eight n8 tiles) per warp
constexpr int kMaxSplits = 64;
constexpr int kPad = 8;              // 16 bytes per shared row: fragment loads hit distinct banks
constexpr int kLdS = kTileN + 4;     // fp32 score row stride
constexpr int kLdP = kTileN + kPad;  // probability row stride (16-bit elements)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

static_assert(kRows * 8 == kThreads, "softmax uses 8 threads per row");
static_assert(kWarps == 2 * (kTileN / 8), "QK^T: one (m-tile, n-tile) pair per warp");
static_assert(kDvChunk == kWarps * 64, "PV: 64 output columns per warp");
static_assert(kLdS % 4 == 0 && kLdP % 4 == 0, "vector access to score and probability rows");

struct Args {
  MlaDecodeParams p;
  int R;           // S_q * H query rows per sequence
  int Dp;          // D_qk rounded up to the mma k step (16)
  int ld;          // shared row stride of Q and K/V tiles: Dp + kPad
  int row_groups;  // ceil(R / kRows)
  int splits;
  float scale_log2;  // softmax_scale * log2(e)
  float* ws_o;       // [B, splits, R, D_v] fp32 partial outputs (normalized by their own l)
  float* ws_lse;     // [B, splits, R] fp32 partial lse (natural log), -inf when empty
};

struct Bf16 {
  static __device__ uint16_t from_float(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
  static __device__ float to_float(uint16_t x) { return __bfloat162float(__ushort_as_bfloat16(x)); }
  static __device__ bool nonfinite(uint16_t x) { return (x & 0x7f80u) == 0x7f80u; }  // exponent all ones
};
struct Fp16 {
  static __device__ uint16_t from_float(float x) { return __half_as_ushort(__float2half_rn(x)); }
  static __device__ float to_float(uint16_t x) { return __half2float(__ushort_as_half(x)); }
  static __device__ bool nonfinite(uint16_t x) { return (x & 0x7c00u) == 0x7c00u; }
};

// max(a, b), NaN when either is NaN (fmaxf returns the other operand and would lose a NaN score);
// the same as fmaxf for numbers. sm_80 and newer.
__device__ __forceinline__ float max_nan(float a, float b) {
  float d;
  asm("max.NaN.f32 %0, %1, %2;\n" : "=f"(d) : "f"(a), "f"(b));
  return d;
}

// D[16x8] += A[16x16] (row) * B[16x8] (col), fp32 accumulators, A and B of type T. The PTX input
// type must be a literal inside the instruction, so one macro writes it for either type.
#define TS_MMA16816(ab)                                                       \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." ab "." ab             \
               ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n" \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])               \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  static_assert(std::is_same_v<T, Bf16> || std::is_same_v<T, Fp16>);
  if constexpr (std::is_same_v<T, Bf16>)
    TS_MMA16816("bf16");
  else
    TS_MMA16816("f16");
}
#undef TS_MMA16816

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four transposed 8x8 b16 matrices: lane l addresses row (l & 7) of matrix l >> 3.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Two values in one 32-bit word, the first in the low half (the lower k index of a fragment).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  return static_cast<uint32_t>(T::from_float(lo)) | (static_cast<uint32_t>(T::from_float(hi)) << 16);
}

__device__ __forceinline__ uint32_t ld32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// One k16 step of S = Q K^T: qa points at Q[row gid][k + 2 tig], kb at K[pos gid][k + 2 tig].
template <class T>
__device__ __forceinline__ void qk_step(float (&c)[4], const uint16_t* qa, const uint16_t* kb, int ld) {
  const uint32_t af[4] = {ld32(qa), ld32(qa + 8 * ld), ld32(qa + 8), ld32(qa + 8 * ld + 8)};
  mma16816<T>(c, af, ld32(kb), ld32(kb + 8));
}

// Stages cache positions [t0, t0 + kTileN) of sequence b into `dst` ([kTileN, ld]); positions
// at or past `end` are zero-filled without touching global memory or the block table.
__device__ void load_tile(const Args& a, int b, int t0, int end, uint16_t* dst) {
  const MlaDecodeParams& p = a.p;
  const int chunks = static_cast<int>(p.D_qk / 8);  // 16-byte pieces per cache row
  const int bs = static_cast<int>(p.block_size);
  const uint16_t* cache = static_cast<const uint16_t*>(p.kv_cache);
  const int32_t* table = p.block_table + static_cast<int64_t>(b) * p.max_blocks;
  for (int i = threadIdx.x; i < kTileN * chunks; i += kThreads) {
    const int j = i / chunks, c = i % chunks, pos = t0 + j;
    uint16_t* s = dst + j * a.ld + c * 8;
    if (pos < end) {
      const int64_t row = static_cast<int64_t>(table[pos / bs]) * bs + pos % bs;
      cp_async16(s, cache + row * p.D_qk + c * 8);
    } else {
      *reinterpret_cast<uint4*>(s) = make_uint4(0, 0, 0, 0);
    }
  }
}

template <class T>
// Two CTAs per SM as far as registers go (128 per thread): what the tensor-core path uses by
// itself; without the bound the rarely taken scalar P V below would raise it to 160 on sm_90a.
__global__ void __launch_bounds__(kThreads, 2) mla_decode_split_kernel(const Args a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const MlaDecodeParams& p = a.p;
  uint16_t* kv_s = reinterpret_cast<uint16_t*>(smem);               // [2][kTileN][ld]
  uint16_t* q_s = kv_s + 2 * kTileN * a.ld;                         // [kRows][ld]
  float* s_s = reinterpret_cast<float*>(q_s + kRows * a.ld);        // [kRows][kLdS]
  uint16_t* p_s = reinterpret_cast<uint16_t*>(s_s + kRows * kLdS);  // [kRows][kLdP]
  float* corr_s = reinterpret_cast<float*>(p_s + kRows * kLdP);     // [kRows]
  float* m_s = corr_s + kRows;                                      // [kRows]
  float* l_s = m_s + kRows;                                         // [kRows]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int gid = lane / 4, tig = lane % 4;  // mma fragment coordinates
  const int rg = blockIdx.x % a.row_groups, dvc = blockIdx.x / a.row_groups;
  const int split = blockIdx.y, b = blockIdx.z;
  const int row0 = rg * kRows;
  const int L = p.seq_lens[b];
  const int chunk = ((L + a.splits - 1) / a.splits + kTileN - 1) / kTileN * kTileN;
  const int begin = split * chunk, end = min(L, begin + chunk);
  const int n_tiles = end > begin ? (end - begin + kTileN - 1) / kTileN : 0;
  const int S_q = static_cast<int>(p.S_q), H = static_cast<int>(p.H);
  // Positions at or past cta_lo are masked for some row of this CTA (its first query, s = row0 / H,
  // sees the fewest); below it every row sees every position.
  const int cta_lo = min(end, L - S_q + row0 / H + 1);

  // Columns [D_qk, Dp) of Q and both K/V buffers are zero so the last k16 step adds nothing.
  if (a.Dp > p.D_qk)
    for (int r = tid; r < 2 * kTileN + kRows; r += kThreads)
      *reinterpret_cast<uint4*>(kv_s + r * a.ld + p.D_qk) = make_uint4(0, 0, 0, 0);
  {
    const int chunks = static_cast<int>(p.D_qk / 8);
    const uint16_t* q = static_cast<const uint16_t*>(p.q) + (static_cast<int64_t>(b) * a.R + row0) * p.D_qk;
    for (int i = tid; i < kRows * chunks; i += kThreads) {
      const int r = i / chunks, c = i % chunks;
      uint16_t* dst = q_s + r * a.ld + c * 8;
      if (row0 + r < a.R)
        cp_async16(dst, q + static_cast<int64_t>(r) * p.D_qk + c * 8);
      else
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
  }
  if (n_tiles > 0) load_tile(a, b, begin, end, kv_s);
  cp_async_commit();

  // Softmax state of row sm_row, kept identically by its 8 threads (columns 4 * sm_part + e).
  const int sm_row = tid / 8, sm_part = tid % 8;
  const int g_row = row0 + sm_row;
  const int row_end = g_row < a.R ? min(end, L - S_q + g_row / H + 1) : 0;
  float m_run = -INFINITY, l_run = 0.0f;

  float o[2][8][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][nt][e] = 0.0f;
  const int col0 = dvc * kDvChunk + warp * 64;  // this warp's first output column

  for (int t = 0; t < n_tiles; ++t) {
    const int t0 = begin + t * kTileN;
    if (t + 1 < n_tiles) load_tile(a, b, t0 + kTileN, end, kv_s + ((t + 1) & 1) * kTileN * a.ld);
    cp_async_commit();  // possibly empty: keeps "all but the newest group" meaning tile t
    cp_async_wait<1>();
    __syncthreads();
    const uint16_t* kv = kv_s + (t & 1) * kTileN * a.ld;

    {  // S = Q K^T for m-tile warp / 4 and n-tile warp % 4; two chains for mma latency.
      const int mt = warp / 4, nt = warp % 4;
      float c[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
      const uint16_t* qa = q_s + (mt * 16 + gid) * a.ld + 2 * tig;
      const uint16_t* kb = kv + (nt * 8 + gid) * a.ld + 2 * tig;
      int k = 0;
      for (; k + 32 <= a.Dp; k += 32) {
        qk_step<T>(c[0], qa + k, kb + k, a.ld);
        qk_step<T>(c[1], qa + k + 16, kb + k + 16, a.ld);
      }
      if (k < a.Dp) qk_step<T>(c[0], qa + k, kb + k, a.ld);
      float* srow = s_s + (mt * 16 + gid) * kLdS + nt * 8 + 2 * tig;
      srow[0] = c[0][0] + c[1][0];
      srow[1] = c[0][1] + c[1][1];
      srow[8 * kLdS] = c[0][2] + c[1][2];
      srow[8 * kLdS + 1] = c[0][3] + c[1][3];
    }
    __syncthreads();

    {  // Online softmax, base 2: row sm_row, columns 4 * sm_part .. + 3.
      const float4 sv = *reinterpret_cast<const float4*>(s_s + sm_row * kLdS + sm_part * 4);
      float x[4] = {sv.x, sv.y, sv.z, sv.w}, tmax = -INFINITY;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        x[e] = t0 + sm_part * 4 + e < row_end ? x[e] * a.scale_log2 : -INFINITY;
        tmax = max_nan(tmax, x[e]);
      }
#pragma unroll
      for (int off = 4; off > 0; off /= 2) tmax = max_nan(tmax, __shfl_xor_sync(0xffffffffu, tmax, off));
      const float m_new = max_nan(m_run, tmax);  // NaN once the row has seen a NaN score, for good
      float corr = 1.0f, psum = 0.0f;
      if (m_new != -INFINITY) {       // (no exp2(-inf - -inf) while the row has seen nothing)
        corr = exp2f(m_run - m_new);  // 0 on the row's first visible score
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          x[e] = exp2f(x[e] - m_new);  // masked: exp2(-inf) = 0
          psum += x[e];
        }
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) x[e] = 0.0f;
      }
#pragma unroll
      for (int off = 4; off > 0; off /= 2) psum += __shfl_xor_sync(0xffffffffu, psum, off);
      l_run = l_run * corr + psum;
      m_run = m_new;
      *reinterpret_cast<uint2*>(p_s + sm_row * kLdP + sm_part * 4) =
          make_uint2(pack2<T>(x[0], x[1]), pack2<T>(x[2], x[3]));
      if (sm_part == 0) corr_s[sm_row] = corr;
    }
    // A masked position (P = 0) whose value is not finite would make 0 * v = NaN in the mma:
    // only positions at or past cta_lo can be masked for a row, and only those are checked.
    bool masked_nonfinite = false;
    if (cta_lo < end && t0 + kTileN > cta_lo) {  // block-uniform; only when S_q > 1, near the end
      const int j0 = max(cta_lo - t0, 0), j1 = min(end - t0, kTileN);
      const int c0 = dvc * kDvChunk, nc = min(static_cast<int>(p.D_v) - c0, kDvChunk);
      int bad = 0;
      for (int i = tid; i < (j1 - j0) * nc; i += kThreads) bad |= T::nonfinite(kv[(j0 + i / nc) * a.ld + c0 + i % nc]);
      masked_nonfinite = __syncthreads_or(bad) != 0;
    }
    __syncthreads();

    // O = diag(corr) O + P V over this warp's 64 columns (only n-tiles that start below D_v).
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const float c_lo = corr_s[mt * 16 + gid], c_hi = corr_s[mt * 16 + gid + 8];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        o[mt][nt][0] *= c_lo;
        o[mt][nt][1] *= c_lo;
        o[mt][nt][2] *= c_hi;
        o[mt][nt][3] *= c_hi;
      }
    }
    if (masked_nonfinite) {
      // Scalar P V over each row's visible positions only (products of 16-bit values are exact
      // in fp32, as in the mma; only the order of the additions differs). This thread's rows:
      // mt * 16 + gid + 8 * half; its columns: col0 + nt * 8 + 2 * tig + e.
      int n_vis[2][2];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int grow = row0 + mt * 16 + gid + 8 * half;
          n_vis[mt][half] = grow < a.R ? min(end, L - S_q + grow / H + 1) - t0 : 0;
        }
      for (int j = 0; j < kTileN; ++j) {
        const uint16_t* vj = kv + j * a.ld + col0 + 2 * tig;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            if (j >= n_vis[mt][half]) continue;
            const float pj = T::to_float(p_s[(mt * 16 + gid + 8 * half) * kLdP + j]);
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
              if (col0 + nt * 8 < p.D_v) {  // columns up to Dp - 1 are in shared memory
                o[mt][nt][2 * half] += pj * T::to_float(vj[nt * 8]);
                o[mt][nt][2 * half + 1] += pj * T::to_float(vj[nt * 8 + 1]);
              }
          }
      }
    } else {
#pragma unroll
      for (int kk = 0; kk < kTileN / 16; ++kk) {
        uint32_t af[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const uint16_t* pa = p_s + (mt * 16 + gid) * kLdP + kk * 16 + 2 * tig;
          af[mt][0] = ld32(pa);
          af[mt][1] = ld32(pa + 8 * kLdP);
          af[mt][2] = ld32(pa + 8);
          af[mt][3] = ld32(pa + 8 * kLdP + 8);
        }
        // Lane l addresses position kk*16 + (l & 7) + 8 * ((l >> 3) & 1), column + 8 * (l >> 4):
        // registers {0, 1} are the B fragment of n-tile 2np, {2, 3} of n-tile 2np + 1.
        const uint16_t* vb = kv + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * a.ld + col0 + (lane >> 4) * 8;
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          if (col0 + np * 16 < p.D_v) {  // warp-uniform; then col0 + np*16 + 15 < Dp as well
            uint32_t bf[4];
            ldmatrix_x4_trans(bf, vb + np * 16);
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
              mma16816<T>(o[mt][2 * np], af[mt], bf[0], bf[1]);
              mma16816<T>(o[mt][2 * np + 1], af[mt], bf[2], bf[3]);
            }
          }
        }
      }
    }
    __syncthreads();  // buffer t & 1 is refilled by the next iteration's load
  }
  cp_async_wait<0>();  // a CTA with no tiles still has its Q copies in flight

  if (sm_part == 0) {
    m_s[sm_row] = m_run;
    l_s[sm_row] = l_run;
    if (dvc == 0 && g_row < a.R) {
      // m NaN (a NaN score) or +inf (a +inf score) is the row's lse; l == 0: it saw nothing.
      const float lse = isnan(m_run) || m_run == INFINITY ? m_run
                        : l_run != 0.0f                   ? (m_run + log2f(l_run)) * kLn2
                                                          : -INFINITY;
      if (a.splits == 1) {
        const int s = g_row / H, h = g_row % H;
        p.lse[(static_cast<int64_t>(b) * p.H + h) * p.S_q + s] = lse;
      } else {
        a.ws_lse[(static_cast<int64_t>(b) * a.splits + split) * a.R + g_row] = lse;
      }
    }
  }
  __syncthreads();

  // Epilogue: out (one split) or the split's normalized partial; fragment element e sits at
  // row gid + 8 * (e / 2), column 2 * tig + e % 2 of its tile.
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = mt * 16 + gid + 8 * half, grow = row0 + r;
      if (grow >= a.R) continue;
      // A NaN or +inf score makes the row NaN; a row that saw nothing is 0 (its o may hold
      // 0 * inf from masked positions); otherwise o / l, as for finite inputs.
      const float m = m_s[r], l = l_s[r];
      const bool nan_row = isnan(m) || m == INFINITY, empty = l == 0.0f;
      const float inv = l != 0.0f ? 1.0f / l : 0.0f;
      const int64_t base = a.splits == 1 ? (static_cast<int64_t>(b) * a.R + grow) * p.D_v
                                         : ((static_cast<int64_t>(b) * a.splits + split) * a.R + grow) * p.D_v;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = col0 + nt * 8 + 2 * tig + e;
          if (col >= p.D_v) continue;
          const float v = nan_row ? NAN : empty ? 0.0f : o[mt][nt][2 * half + e] * inv;
          if (a.splits == 1)
            static_cast<uint16_t*>(p.out)[base + col] = T::from_float(v);
          else
            a.ws_o[base + col] = v;
        }
    }
}

// One CTA per (row, sequence): out = sum_i exp(lse_i - lse) * o_i with lse = log sum_i exp(lse_i).
template <class T>
__global__ void __launch_bounds__(128) mla_decode_combine_kernel(const Args a) {
  __shared__ float w_s[kMaxSplits];
  __shared__ bool live_s[kMaxSplits];  // the split saw something (lse > -inf, or NaN)
  __shared__ float lse_s;
  const MlaDecodeParams& p = a.p;
  const int r = blockIdx.x, b = blockIdx.y;
  const float* lse_in = a.ws_lse + static_cast<int64_t>(b) * a.splits * a.R + r;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    float v0 = lane < a.splits ? lse_in[static_cast<int64_t>(lane) * a.R] : -INFINITY;
    float v1 = lane + 32 < a.splits ? lse_in[static_cast<int64_t>(lane + 32) * a.R] : -INFINITY;
    // fmaxf drops NaN: a NaN split is found separately and makes the row NaN.
    const bool nan = __any_sync(0xffffffffu, isnan(v0) || isnan(v1));
    // A +inf split (a +inf score) makes the row's lse +inf and its out NaN, as in the reference.
    float mx = fmaxf(v0, v1);
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const bool pinf = mx == INFINITY, finite = !pinf && mx != -INFINITY;
    float sum = finite ? expf(v0 - mx) + expf(v1 - mx) : 0.0f;  // no inf - inf, no -inf - -inf
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    const float lse = nan ? NAN : pinf ? INFINITY : finite ? mx + logf(sum) : -INFINITY;
    const bool poison = nan || pinf;
    if (lane < a.splits) {
      w_s[lane] = poison ? NAN : finite ? expf(v0 - lse) : 0.0f;
      live_s[lane] = v0 != -INFINITY;
    }
    if (lane + 32 < a.splits) {
      w_s[lane + 32] = poison ? NAN : finite ? expf(v1 - lse) : 0.0f;
      live_s[lane + 32] = v1 != -INFINITY;
    }
    if (lane == 0) lse_s = lse;
  }
  __syncthreads();
  const float* o_in = a.ws_o + (static_cast<int64_t>(b) * a.splits * a.R + r) * p.D_v;
  uint16_t* out = static_cast<uint16_t*>(p.out) + (static_cast<int64_t>(b) * a.R + r) * p.D_v;
  for (int c = threadIdx.x; c < p.D_v; c += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < a.splits; ++i)
      if (live_s[i]) acc += w_s[i] * o_in[static_cast<int64_t>(i) * a.R * p.D_v + c];
    out[c] = T::from_float(acc);
  }
  if (threadIdx.x == 0) {
    const int s = r / static_cast<int>(p.H), h = r % static_cast<int>(p.H);
    p.lse[(static_cast<int64_t>(b) * p.H + h) * p.S_q + s] = lse_s;
  }
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

size_t smem_bytes(int64_t D_qk) {
  const int64_t ld = round_up(D_qk, 16) + kPad;
  return static_cast<size_t>(((2 * kTileN + kRows) * ld + kRows * kLdP) * 2 + kRows * kLdS * 4 + 3 * kRows * 4);
}

int64_t ctas_per_split(const MlaDecodeParams& p) {
  return p.B * ((p.S_q * p.H + kRows - 1) / kRows) * ((p.D_v + kDvChunk - 1) / kDvChunk);
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("mla_decode_cuda: " + what);
}

template <class T>
void launch(const Args& a, dim3 grid, size_t smem, cudaStream_t stream) {
  TS_CUDA_CHECK(cudaFuncSetAttribute(mla_decode_split_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  mla_decode_split_kernel<T><<<grid, kThreads, smem, stream>>>(a);
  TS_CUDA_CHECK_LAUNCH();
  if (a.splits > 1) {
    mla_decode_combine_kernel<T><<<dim3(a.R, static_cast<unsigned>(a.p.B)), 128, 0, stream>>>(a);
    TS_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

int mla_decode_cuda_num_splits(const MlaDecodeParams& p) {
  if (p.num_splits > 0) return std::min(p.num_splits, kMaxSplits);
  // Enough CTAs to give every SM one; a split that finds no positions exits after its stores.
  int dev = 0, sms = 0;
  TS_CUDA_CHECK(cudaGetDevice(&dev));
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int64_t ctas = std::max<int64_t>(ctas_per_split(p), 1);
  return static_cast<int>(std::clamp<int64_t>((sms + ctas - 1) / ctas, 1, kMaxSplits));
}

size_t mla_decode_cuda_workspace_bytes(const MlaDecodeParams& p) {
  const int splits = mla_decode_cuda_num_splits(p);
  if (splits == 1) return 0;
  return static_cast<size_t>(p.B * splits * p.S_q * p.H * (p.D_v + 1)) * sizeof(float);
}

void mla_decode_cuda(const MlaDecodeParams& p, cudaStream_t stream) {
  require(p.dtype == MlaDtype::kBFloat16 || p.dtype == MlaDtype::kFloat16, "dtype must be bf16 or fp16");
  require(p.D_qk >= p.D_v && p.D_v >= 1, "need D_qk >= D_v >= 1");
  require(p.D_qk % 8 == 0, "D_qk must be a multiple of 8 (16-byte cache rows), got " + std::to_string(p.D_qk));
  require(reinterpret_cast<uintptr_t>(p.q) % 16 == 0 && reinterpret_cast<uintptr_t>(p.kv_cache) % 16 == 0,
          "q and kv_cache must be 16-byte aligned");
  require(p.B <= 65535, "B must be <= 65535");
  require(p.S_q * p.H <= (int64_t{1} << 30), "S_q * H too large");
  require(p.block_size >= 1, "block_size must be >= 1");
  if (p.B == 0) return;

  const size_t smem = smem_bytes(p.D_qk);
  int dev = 0, smem_max = 0;
  TS_CUDA_CHECK(cudaGetDevice(&dev));
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  require(smem <= static_cast<size_t>(smem_max), "D_qk = " + std::to_string(p.D_qk) + " needs " + std::to_string(smem) +
                                                     " bytes of shared memory, device has " + std::to_string(smem_max));

  Args a;
  a.p = p;
  a.R = static_cast<int>(p.S_q * p.H);
  a.Dp = static_cast<int>(round_up(p.D_qk, 16));
  a.ld = a.Dp + kPad;
  a.row_groups = (a.R + kRows - 1) / kRows;
  a.splits = mla_decode_cuda_num_splits(p);
  a.scale_log2 = p.softmax_scale * kLog2e;
  a.ws_o = nullptr;
  a.ws_lse = nullptr;
  if (a.splits > 1) {
    require(p.workspace != nullptr, "workspace of mla_decode_cuda_workspace_bytes(p) bytes is required");
    a.ws_o = static_cast<float*>(p.workspace);
    a.ws_lse = a.ws_o + p.B * a.splits * a.R * p.D_v;
  }
  const int64_t dv_chunks = (p.D_v + kDvChunk - 1) / kDvChunk;
  const dim3 grid(static_cast<unsigned>(a.row_groups * dv_chunks), static_cast<unsigned>(a.splits),
                  static_cast<unsigned>(p.B));
  if (p.dtype == MlaDtype::kBFloat16) {
    launch<Bf16>(a, grid, smem, stream);
  } else {
    launch<Fp16>(a, grid, smem, stream);
  }
}

}  // namespace ts::kern
