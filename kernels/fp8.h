// FP8 (E4M3) quantization and the scaled FP8 GEMM of DeepSeek-V3 §3.3, as torch-free kernels.
//
//   fp8_quantize_tilewise(x)  -> (q, scale)   activations, one scale per 1 x G tile (G = 128)
//   fp8_quantize_blockwise(w) -> (q, scale)   weights, one scale per B x B block (B = 128)
//   fp8_dequantize(q, scale)  -> x            any tile shape TR x TC (1 x G and B x B included)
//   fp8_gemm_nt(a, b)         -> out = A * B^T, scaled, with a model of the limited accumulator
//
// Dimensions: M rows of A (tokens), N rows of B (output features), K the reduction width.
//
// ---- E4M3 (torch.float8_e4m3fn) --------------------------------------------------------------
// Bits S.EEEE.MMM, exponent bias 7. Normals: (1 + M/8) * 2^(E-7), E = 1..15; subnormals (E = 0):
// M * 2^-9 (smallest 2^-9, largest 7 * 2^-9); largest finite 448 (S.1111.110); NaN S.1111.111;
// no infinities. Encoding rounds to nearest, ties to even, and SATURATES: every finite |x| > 448
// and +-inf map to +-448 (code 0x7E / 0xFE); NaN maps to NaN with x's sign (0x7F / 0xFF).
// Difference from torch: x.to(torch.float8_e4m3fn) does not saturate: it rounds |x| > 464 (and
// inf) to NaN. For |x| <= 464 and for NaN inputs the two agree bit for bit (the sign of NaN
// included); the saturating rule is the one CUDA's cvt ... .satfinite.e4m3 applies, and the one
// the quantizers need, since x / scale can round a hair above 448 at the tile's amax.
//
// ---- Scales ----------------------------------------------------------------------------------
// scale = max(amax, 1e-4) / 448 in fp32 (IEEE division), amax = max |x| over the tile's elements;
// q = e4m3(x / scale) (IEEE division, then the saturating encode; a NaN is always written as 0x7F,
// see fp8_quantize_value); dequantized x = decode(q) * scale (one fp32 multiply).
// - Ragged edges: the last tile of a row covers the remaining K % G columns (and a block at the
//   bottom/right edge the remaining rows/columns); its amax and scale use only those elements.
// - pow2_scale: the scale is rounded UP to the next power of two (kept when already one), so
//   x / scale is exact in its exponent and |x / scale| <= 448: no value saturates.
// - NaN in x: ignored by amax (the tile's scale comes from its other elements, 1e-4/448 if every
//   element is NaN) and encoded as NaN (0x7F), so it survives dequantization. +-inf is counted by
//   amax: the scale becomes inf, finite elements encode as +-0 and inf ones as NaN (inf/inf), and
//   the whole tile dequantizes to NaN (0 * inf): an overflow upstream is loud, never clipped.
//
// ---- The GEMM emulator: limited-precision accumulation ---------------------------------------
// out[m, n] = sum_k A[m, k] * B[n, k] with A = decode(a) * a_scale (1 x 128 tiles) and
// B = decode(b) * b_scale (128 x 128 blocks, or 1 x 128 tiles when b_scale_rows = 1: the Wgrad
// GEMM, whose operands are both activation-like and quantized along the token dimension). The
// scale of B for output column n and K group kb is sb = b_scale[n / b_scale_rows, kb].
// Products p_k = decode(a[m,k]) * decode(b[n,k]) are exact in fp32 (4-bit significands). The accumulator keeps
// `accum_mantissa_bits` = b explicit mantissa bits (1..23; V3 measured about 14 significant bits, i.e. b = 13, on
// H800). T_b(v) truncates v toward zero to b mantissa bits (clears the low 23 - b bits of the fp32 pattern); T_23 is
// the identity. One accumulation step `acc <- step(acc, x)` is, per accum_model:
//   kTruncateSum   acc = T_b(fl32(acc + x))           (the sum is rounded to fp32, then truncated)
//   kAlignTruncate e = max(exponent(acc), exponent(x)); acc and x are each truncated toward
//                  zero to multiples of 2^(e - b) (the alignment to the larger exponent drops
//                  the smaller addend's low bits), then acc = T_b(fl32(acc' + x')), where the
//                  fp32 add is exact for b <= 22. (V3's wording: products are aligned to the
//                  largest exponent and truncated.) With b = 23 this is NOT plain fp32 addition.
// kTruncateSum's truncation always points toward zero of the running sum, so it is biased and
// shrinks |out| systematically; kAlignTruncate truncates each addend toward its own zero, so the
// errors of random-sign products mostly cancel. On N(0, 1) inputs, K = 4096, b = 13, no
// promotion, ||err|| / ||ref|| is ~10% (kTruncateSum) and ~0.25% (kAlignTruncate); V3 reports
// "nearly 2%" on H800, between the two. Promotion every 128 brings both below 0.05%. At b = 23
// kTruncateSum is bit-exactly plain fp32 summation.
// Promotion (promote_interval = P > 0): K is cut into windows at every multiple of P and every
// multiple of 128 (where the scales change), whichever comes first; P >= 128 therefore promotes
// every 128 exactly like V3's N_C = 128. In a window, acc starts at +0 and takes raw products in
// ascending k: acc = step(acc, p_k). At the window's end it is promoted into an fp32 accumulator:
// out = fma(acc, fl32(a_scale[m, kb] * sb), out) (one rounding, what CUDA cores do).
// No promotion (P = 0): the limited accumulator runs over all of K and takes scaled products:
//   kTruncateSum acc = T_b(fma(p_k, s_k, acc)), kAlignTruncate acc = step(acc, fl32(p_k * s_k)),
// with s_k = fl32(a_scale * sb) of k's group; out = acc. (sab below is the same fl32(a_scale * sb).)
// Output: fp32 and/or bf16 (round to nearest even; NaN stays NaN). NaN codes and non-finite
// scales propagate to the outputs they touch (the truncations keep the quiet-NaN bit).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TS_FP8_HD __host__ __device__ __forceinline__
#else
#define TS_FP8_HD inline
#endif

namespace ts::kern {

inline constexpr float kFp8E4M3Max = 448.0f;
inline constexpr uint8_t kFp8E4M3MaxCode = 0x7E;  // +448
inline constexpr uint8_t kFp8E4M3NaNCode = 0x7F;  // NaN (0xFF is -NaN)
inline constexpr float kFp8AmaxFloor = 1e-4f;     // amax floor of DeepGEMM's scales
inline constexpr int64_t kFp8GemmBlock = 128;     // GEMM: A tiles 1 x 128, B blocks 128 x 128

// ---------------------------------------------------------------------------------------------
// Bit-level helpers (host and device)
// ---------------------------------------------------------------------------------------------
TS_FP8_HD uint32_t fp8_f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(uint32_t, f);  // std::bit_cast's builtin; vectorizes where memcpy did not
#endif
}

TS_FP8_HD float fp8_f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

// float -> e4m3 code: round to nearest even, saturating (see the top of this file). Branch-free
// (selects are masks) so the CPU loops vectorize, and host and device agree bit for bit. (This
// form gave the same code as the earlier integer-only one for all 2^32 inputs, 1.8x faster.)
TS_FP8_HD uint8_t fp8_e4m3_encode(float x) {
  const uint32_t u = fp8_f32_bits(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7FFFFFFFu;
  // Normal range |x| >= 2^-6: drop 20 of the 23 mantissa bits with round-half-even (a carry
  // into the exponent is the correct rounding), then rebias the exponent from 127 to 7.
  const uint32_t rounded = (a + 0x7FFFFu + ((a >> 20) & 1u)) >> 20;
  const uint32_t normal = rounded - (120u << 3);
  // Subnormal range |x| < 2^-6: the code is round_half_even(|x| / 2^-9), an integer 0..8 (8 is
  // 2^-6, the smallest normal, whose code is also 8). |x| * 2^9 is exact and below 8, so adding
  // 2^23 makes the fp32 adder round it to an integer (ties to even), which lands in the low bits
  // of the sum; fp32 subnormals give 0. (An fma contraction computes the same single rounding.)
#if defined(__CUDA_ARCH__)
  const float t = __fmaf_rn(fp8_f32_from_bits(a), 512.0f, 8388608.0f);  // immune to fast-math flags
#else
  const float t = fp8_f32_from_bits(a) * 512.0f + 8388608.0f;
#endif
  const uint32_t sub = fp8_f32_bits(t) - 0x4B000000u;  // 0x4B000000 = 2^23
  // Masks rather than ?: so that no compiler sinks the float add into a branch (with trapping
  // math, GCC then cannot if-convert the loop back and does not vectorize it).
  const uint32_t m_sub = 0u - static_cast<uint32_t>(a < 0x3C800000u);  // 0x3C800000 = 2^-6
  const uint32_t m_sat = 0u - static_cast<uint32_t>(a > 0x43E00000u);  // 0x43E00000 = 448; +inf too
  const uint32_t m_nan = 0u - static_cast<uint32_t>(a > 0x7F800000u);  // NaN
  uint32_t code = (sub & m_sub) | (normal & ~m_sub);
  code = (kFp8E4M3MaxCode & m_sat) | (code & ~m_sat);
  code = (kFp8E4M3NaNCode & m_nan) | (code & ~m_nan);
  return static_cast<uint8_t>(sign | code);
}

// e4m3 code -> float, exact. NaN codes give a quiet NaN with the code's sign. Branch-free so
// loops over codes vectorize.
TS_FP8_HD float fp8_e4m3_decode(uint8_t code) {
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  const uint32_t em = code & 0x7Fu;  // exponent and mantissa, E << 3 | M
  // Normal: move E.M under the fp32 fields (E << 23 | M << 20) and rebias by 127 - 7 = 120.
  const uint32_t normal = (em << 20) + (120u << 23);
  // Subnormal (E = 0, em = M): M * 2^-9 = 2^(p-9) * (M / 2^p) with p = floor(log2 M), built from
  // integers only (a float conversion would keep GCC from if-converting, so from vectorizing).
  const uint32_t m = em & 7u;
  const uint32_t p = (m >= 2u ? 1u : 0u) + (m >= 4u ? 1u : 0u);
  const uint32_t sub = m == 0u ? 0u : (((118u + p) << 23) | ((m << (23u - p)) & 0x7FFFFFu));
  uint32_t mag = em < 8u ? sub : normal;
  mag = em == 0x7Fu ? 0x7FC00000u : mag;
  return fp8_f32_from_bits(sign | mag);
}

// The tile scale of the contract: max(amax, 1e-4) / 448, optionally rounded up to a power of two.
TS_FP8_HD float fp8_scale_from_amax(float amax, bool pow2) {
  const float a = amax > kFp8AmaxFloor ? amax : kFp8AmaxFloor;
#if defined(__CUDA_ARCH__)
  const float s = __fdiv_rn(a, kFp8E4M3Max);  // IEEE division even under --use_fast_math
#else
  const float s = a / kFp8E4M3Max;
#endif
  uint32_t u = fp8_f32_bits(s);
  // Normal positive s (>= 1e-4/448): a nonzero mantissa means s is not a power of two; bump the
  // exponent and clear the mantissa. inf (amax = inf) has a zero mantissa and stays inf.
  if (pow2 && (u & 0x7FFFFFu) != 0) u = (u & 0xFF800000u) + 0x800000u;
  return fp8_f32_from_bits(u);
}

// One quantized element: e4m3(x / scale) (IEEE division), every NaN written as 0x7F. The sign of
// a NaN that comes out of arithmetic is not portable (x86 makes -NaN from inf/inf, CUDA a
// canonical +NaN from any NaN operand), so the quantizers drop it to stay bit-identical.
TS_FP8_HD uint8_t fp8_quantize_value(float x, float scale) {
#if defined(__CUDA_ARCH__)
  const uint8_t c = fp8_e4m3_encode(__fdiv_rn(x, scale));
#else
  const uint8_t c = fp8_e4m3_encode(x / scale);
#endif
  return (c & 0x7Fu) == 0x7Fu ? kFp8E4M3NaNCode : c;
}

// fp32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
TS_FP8_HD uint16_t fp8_f32_to_bf16_bits(float f) {
  const uint32_t u = fp8_f32_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// 256-entry decode table (host): fp8_e4m3_decode_table()[code] == fp8_e4m3_decode(code).
const float* fp8_e4m3_decode_table();

// ---------------------------------------------------------------------------------------------
// Quantize / dequantize
// ---------------------------------------------------------------------------------------------
struct Fp8QuantTilewiseParams {
  const float* x = nullptr;  // [M, K]
  uint8_t* q = nullptr;      // [M, K] e4m3 codes
  float* scale = nullptr;    // [M, ceil(K/G)]
  int64_t rows = 0;          // M
  int64_t cols = 0;          // K
  int64_t group = 128;       // G, tile width
  bool pow2_scale = false;
};

struct Fp8QuantBlockwiseParams {
  const float* w = nullptr;  // [N, K]
  uint8_t* q = nullptr;      // [N, K] e4m3 codes
  float* scale = nullptr;    // [ceil(N/B), ceil(K/B)]
  int64_t rows = 0;          // N
  int64_t cols = 0;          // K
  int64_t block = 128;       // B, block side
  bool pow2_scale = false;
};

// out[r, c] = decode(q[r, c]) * scale[r / TR, c / TC] (one fp32 multiply). Tilewise data is
// TR = 1, TC = G; blockwise data is TR = TC = B.
struct Fp8DequantParams {
  const uint8_t* q = nullptr;    // [R, C] e4m3 codes
  const float* scale = nullptr;  // [ceil(R/TR), ceil(C/TC)]
  float* out = nullptr;          // [R, C]
  int64_t rows = 0;              // R
  int64_t cols = 0;              // C
  int64_t tile_rows = 1;         // TR
  int64_t tile_cols = 128;       // TC
};

// CPU twins: threaded over tiles / blocks / rows; deterministic (no reductions across threads).
// q[i] = fp8_quantize_value(x[i], scale) for i < n (host; AVX-512 when built for it, the same codes).
void fp8_quantize_span_cpu(const float* x, uint8_t* q, int64_t n, float scale);
void fp8_quantize_tilewise_cpu(const Fp8QuantTilewiseParams& p);
void fp8_quantize_blockwise_cpu(const Fp8QuantBlockwiseParams& p);
void fp8_dequantize_cpu(const Fp8DequantParams& p);

// ---------------------------------------------------------------------------------------------
// Scaled FP8 GEMM, NT layout (DeepGEMM's): out[M, N] = A[M, K] * B[N, K]^T
// ---------------------------------------------------------------------------------------------
enum class Fp8AccumModel : int {
  kTruncateSum = 0,    // acc = T_b(fl32(acc + x))
  kAlignTruncate = 1,  // addends truncated to the larger exponent's b-bit grid, then T_b(sum)
};

struct Fp8GemmParams {
  const uint8_t* a = nullptr;      // [M, K] e4m3 codes
  const float* a_scale = nullptr;  // [M, ceil(K/128)]
  const uint8_t* b = nullptr;      // [N, K] e4m3 codes
  const float* b_scale = nullptr;  // [ceil(N/R), ceil(K/128)], R = b_scale_rows
  float* out = nullptr;            // [M, N] fp32, may be nullptr
  uint16_t* out_bf16 = nullptr;    // [M, N] bf16 bits, may be nullptr (at least one is set)
  int64_t m = 0, n = 0, k = 0;     // M, N, K
  int64_t b_scale_rows = 128;      // R: 128 (weight blocks) or 1 (per-row tiles); nothing else
  // CPU emulator only (the CUDA kernel is the hardware: tensor-core partials promoted every 128).
  int promote_interval = 128;    // P; 0 = never promote
  int accum_mantissa_bits = 23;  // b, 1..23
  Fp8AccumModel accum_model = Fp8AccumModel::kTruncateSum;
};

// The emulator: exactly the semantics at the top of this file, for any M, N, K >= 0. Decodes A
// and B once (LUT) into 4 * (M + N rounded up to 64) * K bytes of scratch, then runs 64 output
// columns per task as independent vector lanes; threaded over (column panel, row) tasks.
// Deterministic: the result does not depend on the thread count.
void fp8_gemm_nt_cpu(const Fp8GemmParams& p);

}  // namespace ts::kern

#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime_api.h>
namespace ts::kern {
// CUDA kernels with the same contracts. Quantize and dequantize agree with the CPU twins bit for
// bit (same fp32 operations; amax is a max, so its order does not matter).
void fp8_quantize_tilewise_cuda(const Fp8QuantTilewiseParams& p, cudaStream_t stream);
void fp8_quantize_blockwise_cuda(const Fp8QuantBlockwiseParams& p, cudaStream_t stream);
void fp8_dequantize_cuda(const Fp8DequantParams& p, cudaStream_t stream);

// FP8 tensor cores (mma.sync m16n8k32 e4m3 -> f32): each 128-wide K slice accumulates in fresh
// fp32 mma accumulators, then out = fma(partial, a_scale * sb, out) in separate fp32
// registers (V3's promotion with N_C = 128); b_scale_rows 128 or 1 as on the CPU.
// promote_interval, accum_mantissa_bits and accum_model are ignored: the tensor core's own
// accumulation is what is measured.
// Requires K % 16 == 0 and 16-byte aligned a and b (16-byte row loads); any M, N >= 1.
// Needs a device of compute capability >= 8.9 running code compiled for sm_89+ (sm_90a on
// Hopper); throws std::runtime_error otherwise (the sm_80 build has no FP8 tensor-core path).
void fp8_gemm_nt_cuda(const Fp8GemmParams& p, cudaStream_t stream);
}  // namespace ts::kern
#endif
