#include "csrc/nn/attention/attention.h"
#include "csrc/nn/attention/mla.h"
#include "csrc/nn/model_config.h"

namespace ts::nn {

GroupedQueryAttentionImpl::GroupedQueryAttentionImpl(int64_t d_model, int64_t n_heads, int64_t n_kv_heads,
                                                     const config::PrecisionConfig& precision)
    : n_heads_(n_heads), n_kv_heads_(n_kv_heads), head_dim_(d_model / n_heads) {
  auto lin = [&](int64_t i, int64_t o) { return Linear(i, o, precision); };
  wq = register_module("wq", lin(d_model, n_heads * head_dim_));
  wk = register_module("wk", lin(d_model, n_kv_heads * head_dim_));
  wv = register_module("wv", lin(d_model, n_kv_heads * head_dim_));
  wo = register_module("wo", lin(n_heads * head_dim_, d_model));
}

torch::Tensor GroupedQueryAttentionImpl::forward(const torch::Tensor& x, const Rope& rope) {
  const int64_t B = x.size(0), T = x.size(1);
  auto q = rope.apply(wq(x).view({B, T, n_heads_, head_dim_}));
  auto k = rope.apply(wk(x).view({B, T, n_kv_heads_, head_dim_}));
  auto v = wv(x).view({B, T, n_kv_heads_, head_dim_});
  return wo(causal_attention(q, k, v, std::nullopt));
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               std::optional<double> scale) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), dv = v.size(-1);
  // On CPU, SDPA's flash kernel needs values as wide as the queries, and otherwise falls back to
  // the math path that materialises [T, T] scores (MLA: d_v < d_nope + d_R). Zero columns appended
  // to the values leave the first d_v output columns as they are: 1.8x faster forward and backward
  // at T = 128, 6x at T = 2048 (MLA's tiny-V3 shapes, 2 cores).
  const auto vp = q.is_cpu() && dv < q.size(-1) ? torch::constant_pad_nd(v, {0, q.size(-1) - dv}) : v;
  // SDPA wants [B, H, T, D]; grouped heads share K/V (enable_gqa broadcasts them).
  auto o = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), vp.transpose(1, 2), {}, 0.0,
                                            /*is_causal=*/true, scale, /*enable_gqa=*/k.size(2) != H);
  if (vp.size(-1) != dv) o = o.narrow(-1, 0, dv);
  return o.transpose(1, 2).reshape({B, T, H * dv});
}

torch::Tensor GroupedQueryAttentionImpl::forward_cached(const torch::Tensor& x, const Rope& rope, KVCache& cache,
                                                        int64_t layer) {
  const int64_t B = x.size(0), S = x.size(1);
  auto q = rope_at(rope, wq(x).view({B, S, n_heads_, head_dim_}), cache);
  auto k = rope_at(rope, wk(x).view({B, S, n_kv_heads_, head_dim_}), cache);
  auto v = wv(x).view({B, S, n_kv_heads_, head_dim_});
  cache.write(layer, 0, k);
  cache.write(layer, 1, v);
  // A prefill of equal prompts: causal SDPA over the step's rows (the decode kernel is for few queries).
  if (cache.fresh_uniform()) return wo(causal_attention(q, k, v, std::nullopt));
  const int64_t L = cache.max_total();
  auto o = attend_over_cache(q, cache.gather(layer, 0, L), cache.gather(layer, 1, L), cache, std::nullopt);
  return wo(o.reshape({B, S, n_heads_ * head_dim_}));
}

std::shared_ptr<AttentionImpl> make_attention(const config::Config& c) {
  const auto& cfg = c.model;
  const auto& a = cfg.attention;
  if (a.kind == "mha" || a.kind == "mqa" || a.kind == "gqa")  // kv heads divide n_heads (check_model_config)
    return std::make_shared<GroupedQueryAttentionImpl>(cfg.d_model, cfg.n_heads, attention_kv_heads(cfg), c.precision);
  if (a.kind == "mla") return std::make_shared<MultiHeadLatentAttentionImpl>(c);
  throw config::ConfigError("model.attention.kind: unsupported kind '" + a.kind + "'");
}

}  // namespace ts::nn
