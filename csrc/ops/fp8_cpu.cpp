// CPU backend of the FP8 op family: checks, allocation, then the torch-free kernels (the GEMM is
// the exact emulator with its limited-precision accumulator model, kernels/fp8.h).
#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/fp8.h"
#include "csrc/ops/fp8_internal.h"
#include "csrc/util/check.h"

namespace ts::ops {

Tensor2 CpuKernels::fp8_quantize_tilewise(const at::Tensor& x, int64_t group, bool pow2) {
  check_fp8_quantize_tilewise_args(x, group);
  Fp8QuantOperands o(x, 1, group);
  kern::fp8_quantize_tilewise_cpu(o.params<kern::Fp8QuantTilewiseParams>(group, pow2));
  return {o.q, o.scale};
}

Tensor2 CpuKernels::fp8_quantize_blockwise(const at::Tensor& w, int64_t block, bool pow2) {
  check_fp8_quantize_blockwise_args(w, block);
  Fp8QuantOperands o(w, block, block);
  kern::fp8_quantize_blockwise_cpu(o.params<kern::Fp8QuantBlockwiseParams>(block, pow2));
  return {o.q, o.scale};
}

at::Tensor CpuKernels::fp8_dequantize(const at::Tensor& q, const at::Tensor& scale, int64_t tile_rows,
                                      int64_t tile_cols) {
  check_fp8_dequantize_args(q, scale, tile_rows, tile_cols);
  Fp8DequantOperands o(q, scale, tile_rows, tile_cols);
  kern::fp8_dequantize_cpu(o.params);
  return o.out;
}

at::Tensor CpuKernels::fp8_gemm_nt(const at::Tensor& a_q, const at::Tensor& a_scale, const at::Tensor& b_q,
                                   const at::Tensor& b_scale, at::ScalarType out_dtype, int64_t promote_interval,
                                   int64_t accum_mantissa_bits, std::string_view accum_model) {
  const bool per_row =
      check_fp8_gemm_args(a_q, a_scale, b_q, b_scale, out_dtype, promote_interval, accum_mantissa_bits, accum_model);
  Fp8GemmOperands g(a_q, a_scale, b_q, b_scale, out_dtype, per_row);
  g.params.promote_interval = static_cast<int>(promote_interval);
  g.params.accum_mantissa_bits = static_cast<int>(accum_mantissa_bits);
  // With 23 bits truncate_sum is exactly fp32 summation: "23 bits" means fp32 whatever the model.
  g.params.accum_model = accum_mantissa_bits == 23 ? kern::Fp8AccumModel::kTruncateSum : parse_accum_model(accum_model);
  kern::fp8_gemm_nt_cpu(g.params);
  return g.out;
}

}  // namespace ts::ops
