// Scaled FP8 GEMM on FP8 tensor cores, NT layout: out[M, N] = (A * a_scale)(B * b_scale)^T
// (contract in kernels/fp8.h). V3's recipe: every 128-wide slice of K is accumulated by
// mma.sync m16n8k32 (e4m3 x e4m3 -> f32) in fresh accumulators, then promoted:
// out = fma(partial, a_scale[m, kb] * b_scale[n / 128, kb], out) in separate fp32 registers.
//
// CTA tile 64 x 128 (kBM x kBN), 4 warps in a 2 x 2 grid, each warp 32 x 64 = 2 x 8 mma tiles of
// 16 x 8. Per 128-slice of K: the CTA stages A[64, 128] and B[128, 128] in shared memory with
// 16-byte loads (zeros past M, N and K), runs 4 mma k-steps of 32, promotes. A CTA's 128 columns
// are one B scale block, and a K slice is one A tile / B block column, so each promotion uses
// one b_scale (or, with per-row B scales, one per column) and one a_scale per row. Single-stage staging: simple and
// correct by construction, not tuned (no cp.async pipeline).
//
// FP8 mma needs sm_89+: the body is compiled only for __CUDA_ARCH__ >= 890 (sm_90a in the
// default build); the sm_80 build has a trapping stub, and the launcher refuses to run it.
#include <cuda_fp8.h>

#include <stdexcept>
#include <string>

#include "kernels/common.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/fp8.h"

namespace ts::kern {
namespace {

constexpr int kBM = 64, kBN = 128, kBK = 128;
constexpr int kWarpsM = 2, kWarpsN = 2, kThreads = 32 * kWarpsM * kWarpsN;
constexpr int kWM = kBM / kWarpsM, kWN = kBN / kWarpsN;  // 32 x 64 per warp
// [[maybe_unused]]: the sm_80 pass compiles only the trapping stub.
[[maybe_unused]] constexpr int kMT = kWM / 16, kNT = kWN / 8;  // mma tiles per warp: 2 x 8
// Shared rows are padded by 16 bytes: rows 144 bytes = 36 words apart, so the 8 rows (groupID)
// x 4 words (threadID_in_group) of one fragment load fall on 32 distinct banks; 144 keeps the
// 16-byte alignment of the staging stores.
[[maybe_unused]] constexpr int kStride = kBK + 16;
static_assert(kBK == kFp8GemmBlock, "one K slice = one A scale tile = one B scale block column (promote per 128)");
static_assert(kBN == kFp8GemmBlock, "a CTA's columns = one B scale block row");
static_assert(kBK % 32 == 0 && kBM % (16 * kWarpsM) == 0 && kBN % (8 * kWarpsN) == 0, "tile shape");
static_assert(sizeof(__nv_fp8_e4m3) == 1, "e4m3 operands are bytes");

[[maybe_unused]] __device__ __forceinline__ uint32_t load_u32(const uint8_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Zeros a warp's register tiles (kMT x kNT mma tiles of 4 fp32 accumulators per thread).
[[maybe_unused]] __device__ __forceinline__ void zero_tiles(float (&acc)[kMT][kNT][4]) {
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
}

// Stages rows [row0, row0 + kRows) x K columns [k0, k0 + kBK) of a [rows, K] e4m3 matrix into
// shared memory; out-of-range rows and columns become zeros (they add nothing to the dot product).
// K % 16 == 0, so a 16-byte chunk is entirely inside or outside K.
template <int kRows>
__device__ __forceinline__ void stage(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src, int64_t row0,
                                      int64_t rows, int64_t k0, int64_t K) {
  constexpr int kChunks = kBK / 16;
  for (int i = threadIdx.x; i < kRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 16;
    const int64_t gr = row0 + r, gk = k0 + c;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (gr < rows && gk < K) v = *reinterpret_cast<const uint4*>(src + gr * K + gk);
    *reinterpret_cast<uint4*>(dst + r * kStride + c) = v;
  }
}

__global__ void __launch_bounds__(kThreads)
    fp8_gemm_nt_kernel(const __nv_fp8_e4m3* __restrict__ a, const float* __restrict__ a_scale,
                       const __nv_fp8_e4m3* __restrict__ b, const float* __restrict__ b_scale, float* __restrict__ out,
                       uint16_t* __restrict__ out_bf16, int64_t M, int64_t N, int64_t K, bool b_scale_per_row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  __shared__ __align__(16) uint8_t As[kBM * kStride];
  __shared__ __align__(16) uint8_t Bs[kBN * kStride];
  const uint8_t* a8 = reinterpret_cast<const uint8_t*>(a);
  const uint8_t* b8 = reinterpret_cast<const uint8_t*>(b);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;  // groupID and threadID_in_group of the PTX fragment layouts
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int64_t m0 = int64_t(blockIdx.x) * kBM, n0 = int64_t(blockIdx.y) * kBN;
  const int64_t KB = (K + kBK - 1) / kBK;
  const float* b_scale_row = b_scale + int64_t(blockIdx.y) * KB;  // B scale block row n0 / 128 (block mode)

  float acc[kMT][kNT][4];  // promoted fp32 sums; element i of a tile is row g + 8 * (i / 2), column 2t + i % 2
  zero_tiles(acc);

  for (int64_t kb = 0; kb < KB; ++kb) {
    stage<kBM>(As, a8, m0, M, kb * kBK, K);
    stage<kBN>(Bs, b8, n0, N, kb * kBK, K);
    __syncthreads();

    float part[kMT][kNT][4];  // fresh tensor-core accumulators for this 128-slice
    zero_tiles(part);

#pragma unroll 1  // keeps one k-step's fragments live: no register spills on sm_90a
    for (int ks = 0; ks < kBK; ks += 32) {
      // A fragment (16 x 32, row-major): regs 0/1 = rows g / g+8 at k 4t..4t+3, regs 2/3 the same
      // rows at k 16+4t..16+4t+3. B fragment (32 x 8, "col" = our [N, K] rows): reg 0 = column g at
      // k 4t..4t+3, reg 1 at k 16+4t... Both operands use the same k mapping, so each mma is the
      // dot product over these 32 k.
      uint32_t af[kMT][4], bf[kNT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        const uint8_t* lo = As + (wm * kWM + mt * 16 + g) * kStride + ks + 4 * t;
        const uint8_t* hi = lo + 8 * kStride;
        af[mt][0] = load_u32(lo);
        af[mt][1] = load_u32(hi);
        af[mt][2] = load_u32(lo + 16);
        af[mt][3] = load_u32(hi + 16);
      }
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const uint8_t* col = Bs + (wn * kWN + nt * 8 + g) * kStride + ks + 4 * t;
        bf[nt][0] = load_u32(col);
        bf[nt][1] = load_u32(col + 16);
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          asm volatile(
              "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
              "{%0,%1,%2,%3};\n"
              : "+f"(part[mt][nt][0]), "+f"(part[mt][nt][1]), "+f"(part[mt][nt][2]), "+f"(part[mt][nt][3])
              : "r"(af[mt][0]), "r"(af[mt][1]), "r"(af[mt][2]), "r"(af[mt][3]), "r"(bf[nt][0]), "r"(bf[nt][1]));
    }
    __syncthreads();  // the next slice's staging overwrites As and Bs

    // Promotion: scale this slice's partials and add them into the fp32 registers. The B scale of
    // each of this thread's columns (element j of a tile is column 2t + j): the block row's, or
    // the column's own with per-row scales (columns past N: zeros, dropped at the store).
    float sb[kNT][2];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t col = n0 + wn * kWN + nt * 8 + 2 * t + j;
        sb[nt][j] = !b_scale_per_row ? b_scale_row[kb] : (col < N ? b_scale[col * KB + kb] : 0.0f);
      }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t row = m0 + wm * kWM + mt * 16 + g + 8 * h;
        const float sa = row < M ? a_scale[row * KB + kb] : 0.0f;  // rows past M: zeros
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          acc[mt][nt][2 * h] = __fmaf_rn(part[mt][nt][2 * h], __fmul_rn(sa, sb[nt][0]), acc[mt][nt][2 * h]);
          acc[mt][nt][2 * h + 1] = __fmaf_rn(part[mt][nt][2 * h + 1], __fmul_rn(sa, sb[nt][1]), acc[mt][nt][2 * h + 1]);
        }
      }
  }

#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = m0 + wm * kWM + mt * 16 + g + 8 * h;
      if (row >= M) continue;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int64_t col = n0 + wn * kWN + nt * 8 + 2 * t + j;
          if (col >= N) continue;
          const float v = acc[mt][nt][2 * h + j];
          if (out) out[row * N + col] = v;
          if (out_bf16) out_bf16[row * N + col] = fp8_f32_to_bf16_bits(v);
        }
    }
#else
  __trap();  // no FP8 tensor cores below sm_89; fp8_gemm_nt_cuda never launches this build
#endif
}

// Throws unless the device has FP8 tensor cores and the code the runtime picked for it was
// compiled for sm_89+ (an sm_89 device running this build's sm_80 binary would only trap).
void require_fp8_tensor_cores() {
  int device = 0, major = 0, minor = 0;
  TS_CUDA_CHECK(cudaGetDevice(&device));
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  cudaFuncAttributes attr{};
  TS_CUDA_CHECK(cudaFuncGetAttributes(&attr, fp8_gemm_nt_kernel));
  if (major * 10 + minor < 89 || attr.ptxVersion < 89)
    throw std::runtime_error(
        "fp8_gemm_nt_cuda: FP8 tensor cores need a GPU of compute capability >= 8.9 and code "
        "compiled for sm_89+; this device is sm_" +
        std::to_string(major * 10 + minor) + " and the kernel it would run was compiled for compute_" +
        std::to_string(attr.ptxVersion) + " (add an sm_89+ target, e.g. 90a, to the build)");
}

}  // namespace

void fp8_gemm_nt_cuda(const Fp8GemmParams& p, cudaStream_t stream) {
  TS_KERNEL_ASSERT(p.m >= 0 && p.n >= 0 && p.k >= 0);
  TS_KERNEL_ASSERT(p.k % 16 == 0);  // whole 16-byte row chunks
  TS_KERNEL_ASSERT(reinterpret_cast<uintptr_t>(p.a) % 16 == 0 && reinterpret_cast<uintptr_t>(p.b) % 16 == 0);
  TS_KERNEL_ASSERT(p.b_scale_rows == kFp8GemmBlock || p.b_scale_rows == 1);
  if (p.m == 0 || p.n == 0) return;  // an empty output (whose pointer may be null)
  TS_KERNEL_ASSERT(p.out != nullptr || p.out_bf16 != nullptr);
  require_fp8_tensor_cores();
  const int64_t grid_m = ceil_div(p.m, kBM), grid_n = ceil_div(p.n, kBN);
  TS_KERNEL_ASSERT(grid_m <= 0x7FFFFFFF && grid_n <= 65535);
  const dim3 grid(static_cast<unsigned>(grid_m), static_cast<unsigned>(grid_n));
  fp8_gemm_nt_kernel<<<grid, kThreads, 0, stream>>>(reinterpret_cast<const __nv_fp8_e4m3*>(p.a), p.a_scale,
                                                    reinterpret_cast<const __nv_fp8_e4m3*>(p.b), p.b_scale, p.out,
                                                    p.out_bf16, p.m, p.n, p.k, p.b_scale_rows == 1);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace ts::kern
