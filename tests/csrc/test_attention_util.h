// Shared helpers of the attention tests: tiny configs for every kind and a closeness measure.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "csrc/config/config.h"

namespace ts::test {

// A 2-layer model small enough for exhaustive checks. init_std is large so that attention
// weights are far from uniform (a wrong mask or position then shows in the outputs).
inline config::Config tiny_attention_config(const std::string& kind, int64_t q_lora_rank = 0) {
  config::Config c;
  c.data.seq_len = 64;
  c.model.vocab_size = 64;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.ffn_hidden = 48;
  c.model.init_std = 0.2;
  auto& a = c.model.attention;
  a.kind = kind;
  a.n_kv_heads = 2;
  a.kv_lora_rank = 16;
  a.q_lora_rank = q_lora_rank;
  a.qk_nope_head_dim = 8;
  a.qk_rope_head_dim = 4;
  a.v_head_dim = 6;  // != qk_nope_head_dim on purpose
  return c;
}

// max |a - b| / max(max |b|, tiny), in double.
inline double rel_max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  auto ad = a.to(torch::kDouble), bd = b.to(torch::kDouble);
  return (ad - bd).abs().max().item<double>() / std::max(bd.abs().max().item<double>(), 1e-30);
}

}  // namespace ts::test
