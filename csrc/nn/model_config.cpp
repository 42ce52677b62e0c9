#include "csrc/nn/model_config.h"

#include <fmt/format.h>

#include <cmath>

namespace ts::nn {

using config::InvalidKeys;

void validate_moe_config(const config::MoeConfig& c) {
  const int64_t E = c.n_routed_experts, G = c.n_group;
  if (E % G)
    throw InvalidKeys({"model.moe.n_group", "model.moe.n_routed_experts"},
                      fmt::format("must divide n_routed_experts ({}), got {}", E, G));
  if (c.topk_group > G)
    throw InvalidKeys({"model.moe.topk_group", "model.moe.n_group"},
                      fmt::format("must be at most n_group ({}), got {}", G, c.topk_group));
  const int64_t eligible = c.topk_group * (E / G);
  if (c.top_k > eligible)
    throw InvalidKeys(
        {"model.moe.top_k", "model.moe.topk_group", "model.moe.n_routed_experts"},
        fmt::format("must be at most the experts in the topk_group best groups ({}), got {}", eligible, c.top_k));
}

void check_precision_config(const config::PrecisionConfig& p) {
  const double f = p.inject_outliers;
  int exponent = 0;
  if (f != 0 && (f < 2 || std::frexp(f, &exponent) != 0.5))
    throw InvalidKeys({"precision.inject_outliers"},
                      fmt::format("expected 0 (off) or a power of two >= 2 (so the fp32 model is unchanged bit for "
                                  "bit), got {}",
                                  f));
}

int64_t model_context(const config::Config& c) { return c.data.seq_len; }

void check_model_config(const config::Config& c) {
  const auto& m = c.model;
  const auto& a = m.attention;
  if (a.kind == "mla") {
    if (a.qk_rope_head_dim % 2)
      throw InvalidKeys({"model.attention.qk_rope_head_dim"},
                        fmt::format("must be even (rotary pairs), got {}", a.qk_rope_head_dim));
  } else {
    if (m.d_model % m.n_heads)
      throw InvalidKeys({"model.n_heads", "model.d_model"},
                        fmt::format("must divide model.d_model ({}), got {}", m.d_model, m.n_heads));
    const int64_t head_dim = m.d_model / m.n_heads;
    if (head_dim % 2)
      throw InvalidKeys(
          {"model.n_heads", "model.d_model"},
          fmt::format("gives heads of d_model / n_heads = {} values, which must be even (rotary pairs)", head_dim));
    if (a.kind == "gqa") {
      const int64_t g = a.n_kv_heads ? a.n_kv_heads : m.n_heads;
      if (m.n_heads % g)
        throw InvalidKeys({"model.attention.n_kv_heads", "model.n_heads"},
                          fmt::format("must divide model.n_heads ({}), got {}", m.n_heads, g));
    }
  }
  if (m.ffn == "moe") validate_moe_config(m.moe);
  if (m.mtp.depth >= c.data.seq_len)
    throw InvalidKeys({"model.mtp.depth", "data.seq_len"},
                      fmt::format("must be less than data.seq_len ({}): depth k predicts token i+k+1 of a sequence, "
                                  "got {}",
                                  c.data.seq_len, m.mtp.depth));

  check_precision_config(c.precision);
}

void check_generate_config(const config::Config& c) {
  const auto& g = c.generate;
  const auto& m = c.model;
  const int64_t ctx = model_context(c);
  if (g.max_new_tokens >= ctx)
    throw InvalidKeys({"generate.max_new_tokens", "data.seq_len"},
                      fmt::format("must leave room for a prompt in the model's context of {} tokens (data.seq_len), "
                                  "got {}",
                                  ctx, g.max_new_tokens));
  if (g.top_k > m.vocab_size)
    throw InvalidKeys({"generate.top_k", "model.vocab_size"},
                      fmt::format("must be at most model.vocab_size ({}), got {}", m.vocab_size, g.top_k));
  if (g.block_size % 16)
    throw InvalidKeys({"generate.block_size"}, fmt::format("expected a multiple of 16, got {}", g.block_size));
}

int64_t attention_kv_heads(const config::ModelConfig& m) {
  const auto& a = m.attention;
  if (a.kind == "mqa") return 1;
  if (a.kind == "gqa" && a.n_kv_heads > 0) return a.n_kv_heads;
  return m.n_heads;
}

}  // namespace ts::nn
