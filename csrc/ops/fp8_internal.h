// Helpers shared by the FP8 backends (fp8_cpu.cpp, fp8_cuda.cpp): torch tensors -> kernel Params.
#pragma once

#include <ATen/ATen.h>

#include "kernels/common.h"
#include "kernels/fp8.h"

namespace ts::ops {

// float8_e4m3fn storage as the kernels' uint8 codes (same bytes).
inline uint8_t* fp8_codes(at::Tensor& t) { return static_cast<uint8_t*>(t.data_ptr()); }
inline const uint8_t* fp8_codes(const at::Tensor& t) { return static_cast<const uint8_t*>(t.const_data_ptr()); }

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
