// CUDA backend of the FP8 op family: the same checks and allocation as the CPU backend, then the
// CUDA kernels on the current stream. The GEMM runs on FP8 tensor cores (sm_89+), promoting every
// 128 of K; the CPU emulator's accumulator knobs describe hardware, so they are not applied here.
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>

#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/cuda_internal.h"
#include "csrc/ops/fp8.h"
#include "csrc/ops/fp8_internal.h"
#include "csrc/util/check.h"

namespace ts::ops {
namespace {

// The kernel loads rows in 16-byte chunks: a contiguous operand whose storage offset breaks the
// alignment is copied into a fresh (aligned) allocation.
at::Tensor aligned16(const at::Tensor& t) {
  auto c = t.contiguous();
  return reinterpret_cast<uintptr_t>(c.const_data_ptr()) % 16 == 0 ? c : c.clone();
}

}  // namespace

Tensor2 CudaKernels::fp8_quantize_tilewise(const at::Tensor& x, int64_t group, bool pow2) {
  check_fp8_quantize_tilewise_args(x, group);
  c10::cuda::CUDAGuard guard(x.device());
  Fp8QuantOperands o(x, 1, group);
  kern::fp8_quantize_tilewise_cuda(o.params<kern::Fp8QuantTilewiseParams>(group, pow2), current_stream());
  return {o.q, o.scale};
}

Tensor2 CudaKernels::fp8_quantize_blockwise(const at::Tensor& w, int64_t block, bool pow2) {
  check_fp8_quantize_blockwise_args(w, block);
  c10::cuda::CUDAGuard guard(w.device());
  Fp8QuantOperands o(w, block, block);
  kern::fp8_quantize_blockwise_cuda(o.params<kern::Fp8QuantBlockwiseParams>(block, pow2), current_stream());
  return {o.q, o.scale};
}

at::Tensor CudaKernels::fp8_dequantize(const at::Tensor& q, const at::Tensor& scale, int64_t tile_rows,
                                       int64_t tile_cols) {
  check_fp8_dequantize_args(q, scale, tile_rows, tile_cols);
  c10::cuda::CUDAGuard guard(q.device());
  Fp8DequantOperands o(q, scale, tile_rows, tile_cols);
  kern::fp8_dequantize_cuda(o.params, current_stream());
  return o.out;
}

at::Tensor CudaKernels::fp8_gemm_nt(const at::Tensor& a_q, const at::Tensor& a_scale, const at::Tensor& b_q,
                                    const at::Tensor& b_scale, at::ScalarType out_dtype, int64_t promote_interval,
                                    int64_t accum_mantissa_bits, std::string_view accum_model) {
  const char* op = "fp8_gemm_nt";
  const bool per_row =
      check_fp8_gemm_args(a_q, a_scale, b_q, b_scale, out_dtype, promote_interval, accum_mantissa_bits, accum_model);
  TS_CHECK_ARG(op, a_q, a_q.size(1) % 16 == 0,
               "expected K % 16 == 0 on CUDA (16-byte row loads), got K = ", a_q.size(1));
  if (promote_interval != 128 || accum_mantissa_bits != 23) {
    TORCH_WARN_ONCE(
        "tinyseek.fp8_gemm_nt: promote_interval and accum_mantissa_bits configure the CPU emulator; "
        "on CUDA the FP8 tensor cores accumulate and partial sums are promoted every 128 (got ",
        promote_interval, ", ", accum_mantissa_bits, ")");
  }
  c10::cuda::CUDAGuard guard(a_q.device());
  Fp8GemmOperands g(aligned16(a_q), a_scale, aligned16(b_q), b_scale, out_dtype, per_row);
  kern::fp8_gemm_nt_cuda(g.params, current_stream());
  return g.out;
}

}  // namespace ts::ops
