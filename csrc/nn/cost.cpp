#include "csrc/nn/cost.h"

#include "csrc/nn/model_config.h"

namespace ts::nn {

namespace {

// One block's shapes: its parameters, its products per token (attention core at `keys` visible
// positions) and its cached values per token. `absorbed`: MLA as it decodes (queries in latent
// space, no decompression of the cached rows).
struct BlockCost {
  int64_t params = 0, skipped_expert_params = 0, kv_values = 0;
  double flops = 0;
};

BlockCost block_cost(const config::Config& c, int64_t layer, double keys, bool absorbed) {
  const auto& m = c.model;
  const auto& a = m.attention;
  const double C = static_cast<double>(m.d_model), H = static_cast<double>(m.n_heads);
  BlockCost b;
  b.params = 2 * m.d_model;  // attn_norm, ffn_norm
  auto proj = [&](int64_t in, int64_t out) {
    b.params += in * out;
    b.flops += 2.0 * static_cast<double>(in) * static_cast<double>(out);
  };
  if (a.kind == "mla") {
    const int64_t h = m.n_heads, dqk = a.qk_nope_head_dim + a.qk_rope_head_dim;
    if (a.q_lora_rank > 0) {
      proj(m.d_model, a.q_lora_rank);
      b.params += a.q_lora_rank;  // q_norm
      proj(a.q_lora_rank, h * dqk);
    } else {
      proj(m.d_model, h * dqk);
    }
    proj(m.d_model, a.kv_lora_rank + a.qk_rope_head_dim);                  // wkv_a
    b.params += a.kv_lora_rank;                                            // kv_norm
    b.params += a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim);  // wkv_b
    proj(h * a.v_head_dim, m.d_model);                                     // wo
    b.kv_values = a.kv_lora_rank + a.qk_rope_head_dim;
    const double dc = static_cast<double>(a.kv_lora_rank), dr = static_cast<double>(a.qk_rope_head_dim),
                 dn = static_cast<double>(a.qk_nope_head_dim), dv = static_cast<double>(a.v_head_dim);
    if (absorbed) {
      // q_nope -> latent, MQA over [c; k_R] with value c, the latent output back to d_v per head.
      b.flops += 2.0 * H * dn * dc + 2.0 * H * (dc + dr) * keys + 2.0 * H * dc * keys + 2.0 * H * dc * dv;
    } else {
      // wkv_b decompresses this token's latent (once per token, not per query), then attention.
      b.flops += 2.0 * dc * H * (dn + dv) + 2.0 * H * (dn + dr) * keys + 2.0 * H * dv * keys;
    }
  } else {
    const int64_t dh = m.d_model / m.n_heads;
    const int64_t kv_heads = attention_kv_heads(m);
    proj(m.d_model, m.n_heads * dh);     // wq
    proj(m.d_model, 2 * kv_heads * dh);  // wk, wv
    proj(m.n_heads * dh, m.d_model);     // wo
    b.kv_values = 2 * kv_heads * dh;
    b.flops += 2.0 * 2.0 * H * static_cast<double>(dh) * keys;  // scores and values
  }
  if (m.ffn == "moe" && layer >= m.moe.first_k_dense) {
    const auto& e = m.moe;
    const int64_t expert = 3 * m.d_model * e.expert_hidden;  // w1, w3 (w13) and w2 of one SwiGLU
    b.params += e.n_routed_experts * m.d_model;              // router
    b.flops += 2.0 * C * static_cast<double>(e.n_routed_experts);
    b.params += e.n_routed_experts * expert + e.n_shared_experts * expert;
    b.flops += 2.0 * static_cast<double>((e.top_k + e.n_shared_experts) * expert);
    b.skipped_expert_params = (e.n_routed_experts - e.top_k) * expert;
  } else {
    proj(m.d_model, 2 * m.ffn_hidden);  // w1, w3
    proj(m.ffn_hidden, m.d_model);      // w2
  }
  return b;
}

}  // namespace

ModelCost model_cost(const config::Config& c) {
  check_model_config(c);
  const auto& m = c.model;
  const int64_t T = c.data.seq_len;
  const double keys = static_cast<double>(T + 1) / 2.0;  // mean positions a causal query sees
  const double head_flops = 2.0 * static_cast<double>(m.d_model) * static_cast<double>(m.vocab_size);
  ModelCost r;
  r.total_parameters = 2 * m.vocab_size * m.d_model + m.d_model;  // embedding, head, final norm
  r.forward_flops_per_token = head_flops;
  int64_t skipped = 0;
  for (int64_t l = 0; l < m.n_layers; ++l) {
    const auto b = block_cost(c, l, keys, /*absorbed=*/false);
    r.total_parameters += b.params;
    skipped += b.skipped_expert_params;
    r.kv_values_per_token += b.kv_values;
    r.forward_flops_per_token += b.flops;
  }
  r.active_parameters = r.total_parameters - skipped;
  for (int64_t k = 1; k <= m.mtp.depth && k < T; ++k) {
    // Depth k runs over T - k positions of T; its causal queries see (T - k + 1) / 2 on average.
    const auto b = block_cost(c, m.n_layers + k - 1, static_cast<double>(T - k + 1) / 2.0, false);
    r.mtp_parameters += 3 * m.d_model + 2 * m.d_model * m.d_model + b.params;  // hnorm, enorm, norm, eh_proj
    const double per_position = 2.0 * 2.0 * static_cast<double>(m.d_model * m.d_model) + b.flops + head_flops;
    r.mtp_forward_flops_per_token += per_position * static_cast<double>(T - k) / static_cast<double>(T);
  }
  r.train_flops_per_token = 3.0 * (r.forward_flops_per_token + r.mtp_forward_flops_per_token);
  return r;
}

double decode_flops_per_token(const config::Config& c, int64_t context) {
  check_model_config(c);
  const auto& m = c.model;
  double f = 2.0 * static_cast<double>(m.d_model) * static_cast<double>(m.vocab_size);
  for (int64_t l = 0; l < m.n_layers; ++l)
    f += block_cost(c, l, static_cast<double>(context + 1), /*absorbed=*/m.attention.kind == "mla").flops;
  return f;
}

}  // namespace ts::nn
