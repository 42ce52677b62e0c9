// Every tinyseek op's schema, in one place. Backends register in csrc/ops/<op>_{cpu,cuda,meta,autograd}.cpp.
#include <torch/library.h>

TORCH_LIBRARY(tinyseek, m) {
  // RMSNorm over the last dim. Returns y and the per-row rstd the backward reuses.
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("rms_norm_fwd(Tensor x, Tensor weight, float eps) -> (Tensor y, Tensor rstd)");
  m.def("rms_norm_bwd(Tensor grad_y, Tensor x, Tensor weight, Tensor rstd) -> (Tensor grad_x, Tensor grad_weight)");

  // FP8 (E4M3, torch.float8_e4m3fn) of DeepSeek-V3 §3.3; numerics in kernels/fp8.h, C++ API in
  // csrc/ops/fp8.h. Quantizers: x [M, K] -> codes and fp32 scales per 1 x group tile / block x block.
  m.def("fp8_quantize_tilewise(Tensor x, int group=128, bool pow2_scale=False) -> (Tensor q, Tensor scale)");
  m.def("fp8_quantize_blockwise(Tensor w, int block=128, bool pow2_scale=False) -> (Tensor q, Tensor scale)");
  m.def("fp8_dequantize(Tensor q, Tensor scale, int tile_rows, int tile_cols) -> Tensor");
  // out [M, N] = A B^T; b_scale in 128 x 128 blocks or per-row tiles; the last three drive the CPU
  // emulator's limited-precision accumulator.
  m.def(
      "fp8_gemm_nt(Tensor a_q, Tensor a_scale, Tensor b_q, Tensor b_scale, ScalarType out_dtype=float32, "
      "int promote_interval=128, int accum_mantissa_bits=23, str accum_model=\"align_truncate\") -> Tensor");
  // y = x W^T with Fprop, Dgrad and Wgrad in FP8: V3's fine-grained recipe, and the per-tensor
  // delayed-scaling baseline (scales [3] for x, weight, grad_y; <= 0 means just in time).
  m.def(
      "fp8_linear(Tensor x, Tensor weight, int promote_interval=128, int accum_mantissa_bits=23, "
      "str accum_model=\"align_truncate\") -> Tensor");
  m.def(
      "fp8_linear_per_tensor(Tensor x, Tensor weight, Tensor scales, int promote_interval=128, "
      "int accum_mantissa_bits=23, str accum_model=\"align_truncate\") -> Tensor");
}
