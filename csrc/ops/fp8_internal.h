// Helpers shared by the FP8 backends (fp8_cpu.cpp, fp8_cuda.cpp): torch tensors -> kernel Params.
#pragma once

#include <ATen/ATen.h>

#include "kernels/common.h"
#include "kernels/fp8.h"

namespace ts::ops {

// float8_e4m3fn storage as the kernels' uint8 codes (same bytes).
inline uint8_t* fp8_codes(at::Tensor& t) { return static_cast<uint8_t*>(t.data_ptr()); }
inline const uint8_t* fp8_codes(const at::Tensor& t) { return static_cast<const uint8_t*>(t.const_data_ptr()); }

// A quantizer's contiguous input x [R, C] fp32 and its outputs: codes q [R, C] e4m3 and scales
// [ceil(R/tile_rows), ceil(C/tile_cols)] fp32 (tilewise: 1 x group tiles; blockwise: block x block).
// params<P>(tile, pow2) fills either quantizer's Params (the two list the same fields in the same
// order). Checked arguments assumed.
struct Fp8QuantOperands {
  at::Tensor x, q, scale;

  Fp8QuantOperands(const at::Tensor& x_in, int64_t tile_rows, int64_t tile_cols)
      : x(x_in.contiguous()),
        q(at::empty(x.sizes(), x.options().dtype(at::kFloat8_e4m3fn))),
        scale(at::empty({kern::ceil_div(x.size(0), tile_rows), kern::ceil_div(x.size(1), tile_cols)}, x.options())) {}

  template <class Params>
  Params params(int64_t tile, bool pow2_scale) {
    return {x.data_ptr<float>(), fp8_codes(q), scale.data_ptr<float>(), x.size(0), x.size(1), tile, pow2_scale};
  }
};

// The dequantizer's contiguous inputs and its output out [R, C] fp32, with the kernel's Params.
struct Fp8DequantOperands {
  at::Tensor q, scale, out;
  kern::Fp8DequantParams params;

  Fp8DequantOperands(const at::Tensor& q_in, const at::Tensor& scale_in, int64_t tile_rows, int64_t tile_cols)
      : q(q_in.contiguous()), scale(scale_in.contiguous()), out(at::empty(q.sizes(), scale.options())) {
    params = {fp8_codes(q), scale.data_ptr<float>(), out.data_ptr<float>(), q.size(0), q.size(1), tile_rows, tile_cols};
  }
};

// Contiguous operands, the output [M, N] in out_dtype and the kernel's Params pointing at them
// (checked arguments assumed). Keeps the contiguous copies alive while the kernel runs.
struct Fp8GemmOperands {
  at::Tensor a, sa, b, sb, out;
  kern::Fp8GemmParams params;

  Fp8GemmOperands(const at::Tensor& a_q, const at::Tensor& a_scale, const at::Tensor& b_q, const at::Tensor& b_scale,
                  at::ScalarType out_dtype, bool b_per_row)
      : a(a_q.contiguous()), sa(a_scale.contiguous()), b(b_q.contiguous()), sb(b_scale.contiguous()) {
    const int64_t M = a.size(0), N = b.size(0), K = a.size(1);
    out = at::empty({M, N}, sa.options().dtype(out_dtype));
    params.a = fp8_codes(a);
    params.a_scale = sa.data_ptr<float>();
    params.b = fp8_codes(b);
    params.b_scale = sb.data_ptr<float>();
    if (out_dtype == at::kBFloat16)
      params.out_bf16 = static_cast<uint16_t*>(out.data_ptr());
    else
      params.out = out.data_ptr<float>();
    params.m = M, params.n = N, params.k = K;
    params.b_scale_rows = b_per_row ? 1 : kern::kFp8GemmBlock;
  }
};

}  // namespace ts::ops
