// Shared by the mla_decode backends (mla_decode_cpu.cpp, mla_decode_cuda.cpp): torch tensors ->
// the kernel's Params.
#pragma once

#include <ATen/ATen.h>

#include "kernels/mla_decode.h"

namespace ts::ops {

// Contiguous q, block_table and seq_lens, the outputs out [B, S_q, H, head_dim_v] (q's dtype) and
// lse [B, H, S_q] fp32, and the kernel's Params pointing at them (checked arguments assumed, and a
// dtype the backend takes). Keeps the contiguous copies alive while the kernel runs.
struct MlaDecodeOperands {
  at::Tensor q, table, lens, out, lse;
  kern::MlaDecodeParams params;

  MlaDecodeOperands(const at::Tensor& q_in, const at::Tensor& kv_cache, const at::Tensor& block_table,
                    const at::Tensor& seq_lens, int64_t head_dim_v, double softmax_scale);
};

}  // namespace ts::ops
