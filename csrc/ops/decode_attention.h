// C++ entry point of torch.ops.tinyseek.decode_attention: the queries of a KV-cached decoding step
// over the cached keys and values (kernel contract: kernels/decode_attention.h).
//   q [B, S, H, D]; k [B, L, Hk, D], v [B, L, Hk, Dv] (Hk divides H; heads and features
//   contiguous, any batch and position strides); last [B, S] int64: query (b, s) attends to
//   positions [0, last[b, s]]; returns out [B, S, H, Dv] in q's dtype.
// Inference only (no autograd). CPU: fp32, tinyseek's kernel; CUDA: torch's
// scaled_dot_product_attention under the equivalent mask.
#pragma once

#include <ATen/ATen.h>

namespace ts::ops {

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& last,
                            double scale);

// Checks shared by every backend (sym sizes, so Meta tensors pass through too).
void check_decode_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& last);

}  // namespace ts::ops
