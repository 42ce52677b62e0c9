// The FP8 op family: argument checks shared by every backend, the dispatcher entry points, and
// the Meta kernels (shapes only, SymInt-clean so torch.compile and opcheck's dynamic-shape tests
// can trace them). CPU: fp8_cpu.cpp; CUDA: fp8_cuda.cpp; FP8 linear with autograd: fp8_linear.cpp.
#include "csrc/ops/fp8.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/util/check.h"

namespace ts::ops {

namespace {

// Largest promote_interval accepted (the kernel takes an int; anything >= 128 promotes every 128).
constexpr int64_t kMaxPromoteInterval = int64_t{1} << 30;

c10::SymInt ceil_div_sym(const c10::SymInt& a, int64_t b) { return (a + (b - 1)) / b; }

}  // namespace

kern::Fp8AccumModel parse_accum_model(std::string_view accum_model) {
  if (accum_model == "align_truncate") return kern::Fp8AccumModel::kAlignTruncate;
  if (accum_model == "truncate_sum") return kern::Fp8AccumModel::kTruncateSum;
  TS_CHECK_ARG("fp8_gemm_nt", accum_model, false, "expected 'align_truncate' or 'truncate_sum', got '", accum_model,
               "'");
  return kern::Fp8AccumModel::kTruncateSum;  // unreachable
}

void check_fp8_quantize_tilewise_args(const at::Tensor& x, int64_t group) {
  const char* op = "fp8_quantize_tilewise";
  TS_CHECK_DIM(op, x, 2);
  TS_CHECK_DTYPE(op, x, at::kFloat);
  TS_CHECK_ARG(op, group, group >= 1, "expected >= 1, got ", group);
}

void check_fp8_quantize_blockwise_args(const at::Tensor& w, int64_t block) {
  const char* op = "fp8_quantize_blockwise";
  TS_CHECK_DIM(op, w, 2);
  TS_CHECK_DTYPE(op, w, at::kFloat);
  TS_CHECK_ARG(op, block, block >= 1, "expected >= 1, got ", block);
}

void check_fp8_dequantize_args(const at::Tensor& q, const at::Tensor& scale, int64_t tile_rows, int64_t tile_cols) {
  const char* op = "fp8_dequantize";
  TS_CHECK_DIM(op, q, 2);
  TS_CHECK_DTYPE(op, q, at::kFloat8_e4m3fn);
  TS_CHECK_ARG(op, tile_rows, tile_rows >= 1, "expected >= 1, got ", tile_rows);
  TS_CHECK_ARG(op, tile_cols, tile_cols >= 1, "expected >= 1, got ", tile_cols);
  TS_CHECK_DIM(op, scale, 2);
  TS_CHECK_DTYPE(op, scale, at::kFloat);
  const auto SR = ceil_div_sym(q.sym_size(0), tile_rows), SC = ceil_div_sym(q.sym_size(1), tile_cols);
  TS_CHECK_ARG(op, scale, scale.sym_size(0) == SR && scale.sym_size(1) == SC, "expected shape [", SR, ", ", SC,
               "] (ceil(rows/tile_rows), ceil(cols/tile_cols) of q ", ::ts::shape_str(q), "), got ",
               ::ts::shape_str(scale));
  TS_CHECK_SAME_DEVICE(op, scale, q);
}

bool check_fp8_gemm_args(const at::Tensor& a_q, const at::Tensor& a_scale, const at::Tensor& b_q,
                         const at::Tensor& b_scale, at::ScalarType out_dtype, int64_t promote_interval,
                         int64_t accum_mantissa_bits, std::string_view accum_model) {
  const char* op = "fp8_gemm_nt";
  TS_CHECK_DIM(op, a_q, 2);
  TS_CHECK_DTYPE(op, a_q, at::kFloat8_e4m3fn);
  TS_CHECK_DIM(op, b_q, 2);
  TS_CHECK_DTYPE(op, b_q, at::kFloat8_e4m3fn);
  const auto M = a_q.sym_size(0), N = b_q.sym_size(0), K = a_q.sym_size(1);
  TS_CHECK_ARG(op, b_q, b_q.sym_size(1) == K, "expected [N, K] with K = ", K, " (the columns of a_q), got ",
               ::ts::shape_str(b_q));
  const auto KB = ceil_div_sym(K, kern::kFp8GemmBlock), NB = ceil_div_sym(N, kern::kFp8GemmBlock);
  TS_CHECK_DIM(op, a_scale, 2);
  TS_CHECK_DTYPE(op, a_scale, at::kFloat);
  TS_CHECK_ARG(op, a_scale, a_scale.sym_size(0) == M && a_scale.sym_size(1) == KB, "expected shape [", M, ", ", KB,
               "] ([M, ceil(K/128)]: one scale per 1 x 128 tile), got ", ::ts::shape_str(a_scale));
  TS_CHECK_DIM(op, b_scale, 2);
  TS_CHECK_DTYPE(op, b_scale, at::kFloat);
  const bool blocks = b_scale.sym_size(0) == NB;
  TS_CHECK_ARG(op, b_scale, (blocks || b_scale.sym_size(0) == N) && b_scale.sym_size(1) == KB, "expected shape [", NB,
               ", ", KB, "] ([ceil(N/128), ceil(K/128)]: 128 x 128 blocks) or [", N, ", ", KB,
               "] ([N, ceil(K/128)]: per-row 1 x 128 tiles), got ", ::ts::shape_str(b_scale));
  TS_CHECK_SAME_DEVICE(op, a_scale, a_q);
  TS_CHECK_SAME_DEVICE(op, b_q, a_q);
  TS_CHECK_SAME_DEVICE(op, b_scale, a_q);
  TS_CHECK_ARG(op, out_dtype, out_dtype == at::kFloat || out_dtype == at::kBFloat16,
               "expected torch.float32 or torch.bfloat16, got ", out_dtype);
  TS_CHECK_ARG(op, promote_interval, promote_interval >= 0 && promote_interval <= kMaxPromoteInterval,
               "expected 0 (never promote) or an interval in [1, 2^30], got ", promote_interval);
  TS_CHECK_ARG(op, accum_mantissa_bits, accum_mantissa_bits >= 1 && accum_mantissa_bits <= 23,
               "expected 1..23 explicit mantissa bits (23 = fp32, V3's H800 ~13), got ", accum_mantissa_bits);
  parse_accum_model(accum_model);
  return !blocks;  // [N, KB] with N == ceil(N/128) (N = 1) reads the same scales either way
}

// ---- Dispatcher entry points ---------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor> fp8_quantize_tilewise(const at::Tensor& x, int64_t group, bool pow2_scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::fp8_quantize_tilewise", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, bool)>();
  return op.call(x, group, pow2_scale);
}

std::tuple<at::Tensor, at::Tensor> fp8_quantize_blockwise(const at::Tensor& w, int64_t block, bool pow2_scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::fp8_quantize_blockwise", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, bool)>();
  return op.call(w, block, pow2_scale);
}

at::Tensor fp8_dequantize(const at::Tensor& q, const at::Tensor& scale, int64_t tile_rows, int64_t tile_cols) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::fp8_dequantize", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t)>();
  return op.call(q, scale, tile_rows, tile_cols);
}

at::Tensor fp8_gemm_nt(const at::Tensor& a_q, const at::Tensor& a_scale, const at::Tensor& b_q,
                       const at::Tensor& b_scale, at::ScalarType out_dtype, int64_t promote_interval,
                       int64_t accum_mantissa_bits, std::string_view accum_model) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::fp8_gemm_nt", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         at::ScalarType, int64_t, int64_t, std::string_view)>();
  return op.call(a_q, a_scale, b_q, b_scale, out_dtype, promote_interval, accum_mantissa_bits, accum_model);
}

at::Tensor fp8_linear(const at::Tensor& x, const at::Tensor& weight, int64_t promote_interval,
                      int64_t accum_mantissa_bits, std::string_view accum_model) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::fp8_linear", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t, std::string_view)>();
  return op.call(x, weight, promote_interval, accum_mantissa_bits, accum_model);
}

at::Tensor fp8_linear_per_tensor(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales,
                                 int64_t promote_interval, int64_t accum_mantissa_bits, std::string_view accum_model) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("tinyseek::fp8_linear_per_tensor", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                                         std::string_view)>();
  return op.call(x, weight, scales, promote_interval, accum_mantissa_bits, accum_model);
}

// ---- Meta kernels: shapes and dtypes only ----------------------------------------------------------
Tensor2 MetaKernels::fp8_quantize_tilewise(const at::Tensor& x, int64_t group, bool) {
  check_fp8_quantize_tilewise_args(x, group);
  const auto M = x.sym_size(0), KT = ceil_div_sym(x.sym_size(1), group);
  return {at::empty_symint(x.sym_sizes(), x.options().dtype(at::kFloat8_e4m3fn)),
          at::empty_symint({M, KT}, x.options())};
}

Tensor2 MetaKernels::fp8_quantize_blockwise(const at::Tensor& w, int64_t block, bool) {
  check_fp8_quantize_blockwise_args(w, block);
  const auto NB = ceil_div_sym(w.sym_size(0), block), KB = ceil_div_sym(w.sym_size(1), block);
  return {at::empty_symint(w.sym_sizes(), w.options().dtype(at::kFloat8_e4m3fn)),
          at::empty_symint({NB, KB}, w.options())};
}

at::Tensor MetaKernels::fp8_dequantize(const at::Tensor& q, const at::Tensor& scale, int64_t tile_rows,
                                       int64_t tile_cols) {
  check_fp8_dequantize_args(q, scale, tile_rows, tile_cols);
  return at::empty_symint(q.sym_sizes(), scale.options());
}

at::Tensor MetaKernels::fp8_gemm_nt(const at::Tensor& a_q, const at::Tensor& a_scale, const at::Tensor& b_q,
                                    const at::Tensor& b_scale, at::ScalarType out_dtype, int64_t promote_interval,
                                    int64_t accum_mantissa_bits, std::string_view accum_model) {
  check_fp8_gemm_args(a_q, a_scale, b_q, b_scale, out_dtype, promote_interval, accum_mantissa_bits, accum_model);
  return at::empty_symint({a_q.sym_size(0), b_q.sym_size(0)}, a_scale.options().dtype(out_dtype));
}

}  // namespace ts::ops
