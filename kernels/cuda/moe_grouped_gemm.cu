// CUDA twin of kernels/cpu/moe_grouped_gemm.cpp: grouped GEMM over contiguous expert segments.
//
// A plain tiled shared-memory GEMM (fp32 or bf16 storage, fp32 accumulation, no tensor cores):
// correct by construction for any segment sizes, meant as the reference GPU path. Every output
// tile lies inside one expert: the row-grouped kernels (forward NT and grad_x NN) launch an upper
// bound of ceil(M / BM) + E row tiles, and each block finds its expert and rows from
// expert_offsets on the device (tiles past the last one exit), so no host synchronization is
// needed. grad_w (TN) runs one grid slice per expert and reduces over that expert's rows.
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/moe.h"

namespace ts::kern {
namespace {

constexpr int kTile = 64;   // BM = BN: output tile is kTile x kTile
constexpr int kDepth = 16;  // BK: reduction step per shared-memory stage
constexpr int kSide = 16;   // threads per tile side; each thread owns 4 x 4 outputs
constexpr int kThreads = kSide * kSide;
constexpr int kPer = kTile / kSide;  // 4
constexpr int kPad = 4;              // shared row padding

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

using Stage = float[kDepth][kTile + kPad];

// S[k][x] = base[x * sx + k * sk] for x < x_lim, k < k_lim, else 0. Consecutive threads walk the
// unit-stride dimension so that global loads coalesce.
template <class T>
__device__ __forceinline__ void load_stage(Stage& S, const T* __restrict__ base, int64_t sx, int64_t sk, int x_lim,
                                           int k_lim) {
  const bool k_fast = sk == 1;
  for (int i = threadIdx.x; i < kDepth * kTile; i += kThreads) {
    const int k = k_fast ? i % kDepth : i / kTile;
    const int x = k_fast ? i / kDepth : i % kTile;
    S[k][x] = (x < x_lim && k < k_lim) ? to_float(base[x * sx + k * sk]) : 0.0f;
  }
}

// acc[i][j] += sum_k A[k][ty + kSide*i] * B[k][tx + kSide*j]
__device__ __forceinline__ void mma_stage(const Stage& A, const Stage& B, float (&acc)[kPer][kPer]) {
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
#pragma unroll
  for (int k = 0; k < kDepth; ++k) {
    float a[kPer], b[kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i) a[i] = A[k][ty + kSide * i];
#pragma unroll
    for (int j = 0; j < kPer; ++j) b[j] = B[k][tx + kSide * j];
#pragma unroll
    for (int i = 0; i < kPer; ++i)
#pragma unroll
      for (int j = 0; j < kPer; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

// C[m, n] (m < m_lim, n < n_lim) = acc, C row stride ldc.
template <class T>
__device__ __forceinline__ void store_tile(T* __restrict__ C, int64_t ldc, int m_lim, int n_lim,
                                           const float (&acc)[kPer][kPer]) {
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
#pragma unroll
  for (int i = 0; i < kPer; ++i)
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int m = ty + kSide * i, n = tx + kSide * j;
      if (m < m_lim && n < n_lim) store(C + m * ldc + n, acc[i][j]);
    }
}

// Row-grouped product, for the rows r of each expert e:
//   C[r, n] = sum_k A[r, k] * B_e(k, n),  A row-major [M, depth], B_e(k, n) = B[e * b_expert + k * sbk + n * sbn]
// forward NT: A = x_sorted, B_e(k=h, n) = w[e, n, h];  grad_x NN: A = grad_out, B_e(k=n, h) = w[e, n, h].
template <class T>
__global__ void __launch_bounds__(kThreads)
    grouped_rows_kernel(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,
                        const int64_t* __restrict__ offsets, int64_t E, int64_t depth, int64_t cols, int64_t b_expert,
                        int64_t sbk, int64_t sbn) {
  __shared__ int64_t tile_expert, tile_row, tile_rows;
  if (threadIdx.x == 0) {
    // Walk the segments: expert e owns ceil(rows_e / kTile) consecutive row tiles.
    tile_expert = -1;
    int64_t first = 0;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t b = offsets[e], n = offsets[e + 1] - b, tiles = (n + kTile - 1) / kTile;
      if (blockIdx.x < first + tiles) {
        tile_expert = e;
        tile_row = b + (blockIdx.x - first) * kTile;
        tile_rows = min(int64_t{kTile}, b + n - tile_row);
        break;
      }
      first += tiles;
    }
  }
  __syncthreads();
  if (tile_expert < 0) return;  // past the last tile
  const int64_t e = tile_expert, row0 = tile_row, col0 = blockIdx.y * int64_t{kTile};
  const int m_lim = static_cast<int>(tile_rows), n_lim = static_cast<int>(min(int64_t{kTile}, cols - col0));
  __shared__ Stage As, Bs;
  float acc[kPer][kPer] = {};
  const T* a = A + row0 * depth;
  const T* b = B + e * b_expert + col0 * sbn;
  for (int64_t k0 = 0; k0 < depth; k0 += kDepth) {
    const int k_lim = static_cast<int>(min(int64_t{kDepth}, depth - k0));
    load_stage(As, a + k0, depth, 1, m_lim, k_lim);
    load_stage(Bs, b + k0 * sbk, sbn, sbk, n_lim, k_lim);
    __syncthreads();
    mma_stage(As, Bs, acc);
    __syncthreads();
  }
  store_tile(C + row0 * cols + col0, cols, m_lim, n_lim, acc);
}

// grad_w[e, n, h] = sum_{r in rows of e} grad_out[r, n] * x_sorted[r, h]; zeros for an empty expert.
// Grid: (ceil(N / kTile), ceil(H / kTile), E).
template <class T>
__global__ void __launch_bounds__(kThreads)
    grouped_wgrad_kernel(const T* __restrict__ grad_out, const T* __restrict__ x, T* __restrict__ grad_w,
                         const int64_t* __restrict__ offsets, int64_t N, int64_t H) {
  const int64_t e = blockIdx.z, n0 = blockIdx.x * int64_t{kTile}, h0 = blockIdx.y * int64_t{kTile};
  const int64_t begin = offsets[e], end = offsets[e + 1];
  const int m_lim = static_cast<int>(min(int64_t{kTile}, N - n0)),
            n_lim = static_cast<int>(min(int64_t{kTile}, H - h0));
  __shared__ Stage As, Bs;
  float acc[kPer][kPer] = {};
  for (int64_t r0 = begin; r0 < end; r0 += kDepth) {
    const int k_lim = static_cast<int>(min(int64_t{kDepth}, end - r0));
    load_stage(As, grad_out + r0 * N + n0, 1, N, m_lim, k_lim);  // A(m = n, k = r)
    load_stage(Bs, x + r0 * H + h0, 1, H, n_lim, k_lim);         // B(k = r, n = h)
    __syncthreads();
    mma_stage(As, Bs, acc);
    __syncthreads();
  }
  store_tile(grad_w + (e * N + n0) * H + h0, H, m_lim, n_lim, acc);
}

template <class T>
void launch_rows(const void* A, const void* B, void* C, const int64_t* offsets, int64_t M, int64_t E, int64_t depth,
                 int64_t cols, int64_t b_expert, int64_t sbk, int64_t sbn, cudaStream_t stream) {
  const int64_t row_tiles = (M + kTile - 1) / kTile + E, col_tiles = (cols + kTile - 1) / kTile;
  TS_KERNEL_ASSERT(row_tiles < (int64_t{1} << 31) && col_tiles <= 65535);
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(col_tiles));
  grouped_rows_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(A), static_cast<const T*>(B),
                                                        static_cast<T*>(C), offsets, E, depth, cols, b_expert, sbk,
                                                        sbn);
  TS_CUDA_CHECK_LAUNCH();
}

template <class T>
void launch_wgrad(const MoeGroupedGemmBackwardCudaParams& p, cudaStream_t stream) {
  const int64_t N = p.out_features, H = p.hidden;
  const int64_t n_tiles = (N + kTile - 1) / kTile, h_tiles = (H + kTile - 1) / kTile;
  TS_KERNEL_ASSERT(n_tiles < (int64_t{1} << 31) && h_tiles <= 65535 && p.experts <= 65535);
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(h_tiles), static_cast<unsigned>(p.experts));
  grouped_wgrad_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(p.grad_out),
                                                         static_cast<const T*>(p.x_sorted), static_cast<T*>(p.grad_w),
                                                         p.expert_offsets, N, H);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace

void moe_grouped_gemm_cuda(const MoeGroupedGemmCudaParams& p, cudaStream_t stream) {
  const int64_t M = p.rows, N = p.out_features, H = p.hidden, E = p.experts;
  if (M == 0 || N == 0) return;
  // out[r, n] = sum_h x[r, h] w[e, n, h]: B_e(k = h, n) at w + e*N*H + h + n*H.
  if (p.bf16)
    launch_rows<__nv_bfloat16>(p.x_sorted, p.w, p.out, p.expert_offsets, M, E, H, N, N * H, 1, H, stream);
  else
    launch_rows<float>(p.x_sorted, p.w, p.out, p.expert_offsets, M, E, H, N, N * H, 1, H, stream);
}

void moe_grouped_gemm_backward_cuda(const MoeGroupedGemmBackwardCudaParams& p, cudaStream_t stream) {
  const int64_t M = p.rows, N = p.out_features, H = p.hidden, E = p.experts;
  if (H == 0) return;
  if (p.grad_x && M > 0) {
    // grad_x[r, h] = sum_n grad_out[r, n] w[e, n, h]: B_e(k = n, h) at w + e*N*H + n*H + h.
    if (p.bf16)
      launch_rows<__nv_bfloat16>(p.grad_out, p.w, p.grad_x, p.expert_offsets, M, E, N, H, N * H, H, 1, stream);
    else
      launch_rows<float>(p.grad_out, p.w, p.grad_x, p.expert_offsets, M, E, N, H, N * H, H, 1, stream);
  }
  if (p.grad_w && N > 0 && E > 0) {
    if (p.bf16)
      launch_wgrad<__nv_bfloat16>(p, stream);
    else
      launch_wgrad<float>(p, stream);
  }
}

}  // namespace ts::kern
