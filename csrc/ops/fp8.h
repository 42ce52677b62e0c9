// C++ entry points for the FP8 op family (DeepSeek-V3 §3.3). Each goes through the dispatcher, so
// CPU, CUDA, Meta and Autograd registrations apply exactly as for Python callers of
// torch.ops.tinyseek.*. Exact numerics (E4M3 encoding, scales, the accumulator model) are
// documented once, in kernels/fp8.h.
//
// Dimensions: M rows of A (tokens), N rows of B (output features), K the reduction width;
// FP8 tensors are torch.float8_e4m3fn, scales fp32.
#pragma once

#include <ATen/ATen.h>

#include <string_view>
#include <tuple>

#include "kernels/fp8.h"

namespace ts::ops {

// x [M, K] fp32 -> (q [M, K] e4m3, scale [M, ceil(K/group)] fp32): one scale per 1 x group tile.
std::tuple<at::Tensor, at::Tensor> fp8_quantize_tilewise(const at::Tensor& x, int64_t group = 128,
                                                         bool pow2_scale = false);

// w [N, K] fp32 -> (q [N, K] e4m3, scale [ceil(N/block), ceil(K/block)] fp32): block x block tiles.
std::tuple<at::Tensor, at::Tensor> fp8_quantize_blockwise(const at::Tensor& w, int64_t block = 128,
                                                          bool pow2_scale = false);

// q [R, C] e4m3, scale [ceil(R/tile_rows), ceil(C/tile_cols)] -> [R, C] fp32.
at::Tensor fp8_dequantize(const at::Tensor& q, const at::Tensor& scale, int64_t tile_rows, int64_t tile_cols);

// out [M, N] = (a_q * a_scale) (b_q * b_scale)^T in out_dtype (float32 or bfloat16).
// a_q [M, K], a_scale [M, ceil(K/128)]; b_q [N, K], b_scale [ceil(N/128), ceil(K/128)] (weight
// blocks) or [N, ceil(K/128)] (per-row tiles, the Wgrad layout; told apart by the row count).
// promote_interval, accum_mantissa_bits and accum_model drive the CPU emulator's accumulator
// ("align_truncate" or "truncate_sum"; with 23 bits the accumulator is plain fp32 whatever the
// model); CUDA runs the tensor cores (promotion every 128) and warns once if they are not the
// defaults.
at::Tensor fp8_gemm_nt(const at::Tensor& a_q, const at::Tensor& a_scale, const at::Tensor& b_q,
                       const at::Tensor& b_scale, at::ScalarType out_dtype = at::kFloat, int64_t promote_interval = 128,
                       int64_t accum_mantissa_bits = 23, std::string_view accum_model = "align_truncate");

// y [..., N] = x [..., K] weight[N, K]^T with V3's recipe: Fprop, Dgrad and Wgrad as FP8 GEMMs
// (x in 1 x 128 tiles and weight in 128 x 128 blocks; Dgrad: grad_y tiles along N and the weight's
// blocks transposed; Wgrad: grad_y^T and x^T in tiles along the tokens). fp32 in and out.
at::Tensor fp8_linear(const at::Tensor& x, const at::Tensor& weight, int64_t promote_interval = 128,
                      int64_t accum_mantissa_bits = 23, std::string_view accum_model = "align_truncate");

// The same GEMMs with one scale per tensor (TransformerEngine's delayed-scaling recipe): scales
// [3] fp32 = the dequantization scales of (x, weight, grad_y), each amax / 448 from the caller's
// amax history; an entry <= 0 means "just in time": max(amax, 1e-4) / 448 of the tensor itself.
// Each tensor is quantized once (values beyond 448 * scale saturate) and its codes are transposed
// for the backward GEMMs.
at::Tensor fp8_linear_per_tensor(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales,
                                 int64_t promote_interval = 128, int64_t accum_mantissa_bits = 23,
                                 std::string_view accum_model = "align_truncate");

// ---- Shared by the backends (csrc/ops/fp8*.cpp) ------------------------------------------------
// Argument checks; every message names the op and the argument.
void check_fp8_quantize_tilewise_args(const at::Tensor& x, int64_t group);
void check_fp8_quantize_blockwise_args(const at::Tensor& w, int64_t block);
void check_fp8_dequantize_args(const at::Tensor& q, const at::Tensor& scale, int64_t tile_rows, int64_t tile_cols);
// Returns true when b_scale is per-row ([N, KB]) rather than blocks ([ceil(N/128), KB]).
bool check_fp8_gemm_args(const at::Tensor& a_q, const at::Tensor& a_scale, const at::Tensor& b_q,
                         const at::Tensor& b_scale, at::ScalarType out_dtype, int64_t promote_interval,
                         int64_t accum_mantissa_bits, std::string_view accum_model);
// "align_truncate" | "truncate_sum" -> the kernel's model (throws naming the argument otherwise).
kern::Fp8AccumModel parse_accum_model(std::string_view accum_model);

}  // namespace ts::ops
