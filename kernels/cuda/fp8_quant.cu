// CUDA twins of the FP8 quantizers and the dequantizer (contract in kernels/fp8.h).
//
// Bit-for-bit equal to the CPU twins: amax is a max over the same bit patterns (|x| with NaN
// counted as 0), so the reduction order does not matter; the scale, x / scale (IEEE division)
// and the saturating encode are the same fp32 operations through fp8_quantize_value of fp8.h.
// The encode is fp8.h's own rather than cuda_fp8.h's __nv_cvt_float_to_fp8 so that every bit
// matches the CPU (codes are stored as raw bytes, the __nv_fp8_e4m3 storage format).
#include <cuda_fp8.h>

#include <algorithm>

#include "kernels/common.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/fp8.h"

namespace ts::kern {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
static_assert(sizeof(__nv_fp8_e4m3) == 1, "e4m3 codes are bytes");

// |x| as bits, NaN as 0: for non-NaN floats the unsigned order of these bits is the order of |x|.
__device__ __forceinline__ uint32_t abs_bits(float x) {
  const uint32_t a = fp8_f32_bits(x) & 0x7FFFFFFFu;
  return a > 0x7F800000u ? 0u : a;
}

__device__ __forceinline__ uint32_t warp_max(uint32_t v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// One warp per 1 x G tile: lanes stride the tile (coalesced loads and byte stores).
__global__ void __launch_bounds__(kThreads)
    quantize_tilewise_kernel(const float* __restrict__ x, uint8_t* __restrict__ q, float* __restrict__ scale, int64_t M,
                             int64_t K, int64_t G, int64_t KT, bool pow2) {
  const int64_t tile = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (tile >= M * KT) return;  // warp-uniform: the shuffles below see full warps
  const int lane = threadIdx.x % 32;
  const int64_t r = tile / KT, k0 = (tile % KT) * G, len = min(G, K - k0);
  const float* xt = x + r * K + k0;
  uint32_t m = 0;
  for (int64_t i = lane; i < len; i += 32) m = max(m, abs_bits(xt[i]));
  const float s = fp8_scale_from_amax(fp8_f32_from_bits(warp_max(m)), pow2);
  if (lane == 0) scale[tile] = s;
  uint8_t* qt = q + r * K + k0;
  for (int64_t i = lane; i < len; i += 32) qt[i] = fp8_quantize_value(xt[i], s);
}

// One CTA per B x B block: block-wide amax (warp shuffles, then one value per warp in shared
// memory), then every thread quantizes a strided share of the block.
__global__ void __launch_bounds__(kThreads)
    quantize_blockwise_kernel(const float* __restrict__ w, uint8_t* __restrict__ q, float* __restrict__ scale,
                              int64_t N, int64_t K, int64_t B, int64_t KB, bool pow2) {
  __shared__ uint32_t warp_amax[kWarps];
  const int64_t t = blockIdx.x;
  const int64_t r0 = (t / KB) * B, k0 = (t % KB) * B;
  const int64_t len = min(B, K - k0), count = min(B, N - r0) * len;
  uint32_t m = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) m = max(m, abs_bits(w[(r0 + i / len) * K + k0 + i % len]));
  m = warp_max(m);
  if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = m;
  __syncthreads();
  m = 0;
  for (int i = 0; i < kWarps; ++i) m = max(m, warp_amax[i]);
  const float s = fp8_scale_from_amax(fp8_f32_from_bits(m), pow2);
  if (threadIdx.x == 0) scale[t] = s;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) {
    const int64_t idx = (r0 + i / len) * K + k0 + i % len;
    q[idx] = fp8_quantize_value(w[idx], s);
  }
}

// Grid-stride elementwise decode(q) * scale of its tile (one fp32 multiply, as on the CPU).
__global__ void __launch_bounds__(kThreads)
    dequantize_kernel(const uint8_t* __restrict__ q, const float* __restrict__ scale, float* __restrict__ out,
                      int64_t R, int64_t C, int64_t TR, int64_t TC, int64_t SC) {
  const int64_t total = R * C, stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / C, c = i % C;
    out[i] = __fmul_rn(fp8_e4m3_decode(q[i]), scale[(r / TR) * SC + c / TC]);
  }
}

int grid_for(int64_t blocks) {
  TS_KERNEL_ASSERT(blocks <= 0x7FFFFFFF);
  return static_cast<int>(blocks);
}

}  // namespace

void fp8_quantize_tilewise_cuda(const Fp8QuantTilewiseParams& p, cudaStream_t stream) {
  TS_KERNEL_ASSERT(p.rows >= 0 && p.cols >= 0 && p.group >= 1);
  const int64_t KT = ceil_div(p.cols, p.group), tiles = p.rows * KT;
  if (tiles == 0) return;
  quantize_tilewise_kernel<<<grid_for(ceil_div(tiles, kWarps)), kThreads, 0, stream>>>(
      p.x, p.q, p.scale, p.rows, p.cols, p.group, KT, p.pow2_scale);
  TS_CUDA_CHECK_LAUNCH();
}

void fp8_quantize_blockwise_cuda(const Fp8QuantBlockwiseParams& p, cudaStream_t stream) {
  TS_KERNEL_ASSERT(p.rows >= 0 && p.cols >= 0 && p.block >= 1);
  const int64_t KB = ceil_div(p.cols, p.block), blocks = ceil_div(p.rows, p.block) * KB;
  if (blocks == 0) return;
  quantize_blockwise_kernel<<<grid_for(blocks), kThreads, 0, stream>>>(p.w, p.q, p.scale, p.rows, p.cols, p.block, KB,
                                                                       p.pow2_scale);
  TS_CUDA_CHECK_LAUNCH();
}

void fp8_dequantize_cuda(const Fp8DequantParams& p, cudaStream_t stream) {
  TS_KERNEL_ASSERT(p.rows >= 0 && p.cols >= 0 && p.tile_rows >= 1 && p.tile_cols >= 1);
  const int64_t total = p.rows * p.cols;
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>(ceil_div(total, kThreads), int64_t(1) << 16);  // grid-stride beyond
  dequantize_kernel<<<grid_for(blocks), kThreads, 0, stream>>>(p.q, p.scale, p.out, p.rows, p.cols, p.tile_rows,
                                                               p.tile_cols, ceil_div(p.cols, p.tile_cols));
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace ts::kern
