// C++ entry point of torch.ops.tinyseek.mla_decode: MLA decode attention over a paged latent
// cache in FlashMLA's layout (kernel contract: kernels/mla_decode.h).
//   q [B, S_q, H, D_qk]; kv_cache [NB, BS, 1, D_qk]; block_table [B, MB] int32; seq_lens [B] int32
//   (cached rows per sequence, including the S_q new ones, which attend causally);
//   returns out [B, S_q, H, head_dim_v] (dtype of q) and lse [B, H, S_q] fp32 (natural log).
// Inference only (no autograd). CPU: fp32 or bf16; CUDA: bf16 or fp16.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace ts::ops {

std::tuple<at::Tensor, at::Tensor> mla_decode(const at::Tensor& q, const at::Tensor& kv_cache,
                                              const at::Tensor& block_table, const at::Tensor& seq_lens,
                                              int64_t head_dim_v, double softmax_scale);

// Checks shared by every backend (shapes through sym sizes, so Meta tensors pass through too).
void check_mla_decode_args(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_table,
                           const at::Tensor& seq_lens, int64_t head_dim_v, double softmax_scale);

// Value checks that read block_table and seq_lens (CPU tensors only): every length in
// [0, MB * BS] and every block a sequence uses in [0, NB).
void check_mla_decode_values(const at::Tensor& kv_cache, const at::Tensor& block_table, const at::Tensor& seq_lens);

}  // namespace ts::ops
