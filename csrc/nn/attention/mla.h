// Multi-head latent attention (DeepSeek-V2 §2.1, V3 §2.1).
//
// Per token t (dims: d_c = kv_lora_rank, d_c' = q_lora_rank, d_n = qk_nope_head_dim,
// d_R = qk_rope_head_dim, d_v = v_head_dim, H heads):
//   [c_t ; k_R_pre] = wkv_a h_t                  joint down-projection (d_c + d_R)
//   c_t   = kv_norm(c_t)                          the KV latent, what the cache holds
//   k^R_t = RoPE(k_R_pre)                         ONE rope key shared by every head
//   [k^C_{t,i} ; v_{t,i}] = (wkv_b c_t)_i         per-head up-projections W_UK,i and W_UV,i
//   q_t = wq h_t, or wq_b q_norm(wq_a h_t) with the low-rank query (q_lora_rank > 0);
//   q_{t,i} = [q^C_{t,i} ; RoPE(q^R_{t,i})]
//   o_{t,i} = sum_j softmax_j(scale * q_{t,i} . [k^C_{j,i} ; k^R_j]) v_{j,i};  u_t = wo [o_{t,1}; ...]
// Parameter names match python/tinyseek/nn.py's MultiHeadLatentAttention (state dicts load
// across), and wkv_b's weight is [H * (d_n + d_v), d_c] with head i's W_UK rows then W_UV rows.
//
// Two decode paths compute the same function over the cache of [c_t ; k^R_t] rows:
//   naive:    decompress every cached c_j into per-head keys and values, then attend;
//   absorbed: fold W_UK into the query (q^C_i W_UK,i is d_c wide) and W_UV after the attention,
//             which is then MQA over the latent rows (key d_c + d_R, value d_c), computed by
//             torch.ops.tinyseek.mla_decode over the paged cache.
#pragma once

#include "csrc/nn/attention/attention.h"

namespace ts::nn {

enum class MlaDecodePath { kAbsorbed, kNaive };

class MultiHeadLatentAttentionImpl : public AttentionImpl {
 public:
  explicit MultiHeadLatentAttentionImpl(const config::Config& cfg);

  // Training and prefill without a cache (naive: decompressed keys and values, causal SDPA).
  torch::Tensor forward(const torch::Tensor& x, const Rope& rope) override;
  int64_t kv_cache_values_per_token() const override { return d_c_ + d_r_; }
  int64_t rope_dim() const override { return d_r_; }
  std::vector<CachePlane> cache_planes() const override { return {{1, d_c_ + d_r_}}; }
  // Decodes on decode_path.
  torch::Tensor forward_cached(const torch::Tensor& x, const Rope& rope, KVCache& cache, int64_t layer) override;

  MlaDecodePath decode_path = MlaDecodePath::kAbsorbed;
  double softmax_scale() const { return scale_; }

  // Absorbed decoding over a caller-held paged latent cache (torch.ops.tinyseek.mla_decode's
  // layout; tinyseek.nn.MultiHeadLatentAttention.decode): sequence b of x [B, S, C] appends its S
  // tokens after the seq_lens[b] [B] int32 tokens cached, at positions seq_lens[b] .. + S - 1;
  // their rows are written into kv_cache [NB, BS, 1, d_c + d_R] through block_table [B, MB]
  // int32. Returns (y [B, S, C], seq_lens + S). Inference only.
  std::pair<torch::Tensor, torch::Tensor> decode_paged(const torch::Tensor& x, const Rope& rope,
                                                       const torch::Tensor& kv_cache, const torch::Tensor& block_table,
                                                       const torch::Tensor& seq_lens);

  // Query projection (wq, or wq_a -> q_norm -> wq_b), KV down-projection, norm, up-projection, output.
  Linear wq{nullptr}, wq_a{nullptr}, wq_b{nullptr};
  RMSNorm q_norm{nullptr};
  Linear wkv_a{nullptr};
  RMSNorm kv_norm{nullptr};
  Linear wkv_b{nullptr}, wo{nullptr};

 private:
  // q_nope [B, S, H, d_n] and the rotated q_pe [B, S, H, d_R], at the cache step's positions
  // (or 0..S-1 without a cache), or at `positions` [B, S] when given.
  std::pair<torch::Tensor, torch::Tensor> queries(const torch::Tensor& x, const Rope& rope, const KVCache* cache,
                                                  const torch::Tensor& positions = {});
  // The cache rows [c ; k^R] of x, [B, S, 1, d_c + d_R].
  torch::Tensor latent_rows(const torch::Tensor& x, const Rope& rope, const KVCache* cache,
                            const torch::Tensor& positions = {});
  // W_UK folded into the queries: [B, S, H, d_c + d_R] in `dtype`; W_UV applied to the latent
  // outputs [B, S, H, d_c] -> [B, S, H, d_v]. Both use the fp32 master weight of wkv_b.
  torch::Tensor absorbed_queries(const torch::Tensor& q_nope, const torch::Tensor& q_pe, torch::ScalarType dtype);
  torch::Tensor absorbed_values(const torch::Tensor& out);
  // Causal attention of the queries over the decompressed rows [B, T, 1, d_c + d_R] of the same
  // T positions (training, and a prefill into empty caches) -> [B, T, C].
  torch::Tensor causal_naive(const torch::Tensor& q_nope, const torch::Tensor& q_pe, const torch::Tensor& rows);
  torch::Tensor decode_naive(const torch::Tensor& q_nope, const torch::Tensor& q_pe, KVCache& cache, int64_t layer);
  torch::Tensor decode_absorbed(const torch::Tensor& q_nope, const torch::Tensor& q_pe, KVCache& cache, int64_t layer);

  int64_t n_heads_, d_c_, d_cq_, d_n_, d_r_, d_v_;
  double scale_;
};

}  // namespace ts::nn
