#include "csrc/nn/attention/mla.h"

#include <cmath>

#include "csrc/ops/mla_decode.h"

namespace ts::nn {

namespace {

// Rotation at the positions of the cache's step, at explicit positions, or at 0..S-1 for every
// sequence.
torch::Tensor rotate(const Rope& rope, const torch::Tensor& x, const KVCache* cache, const torch::Tensor& positions) {
  if (cache) return rope_at(rope, x, *cache);
  return positions.defined() ? rope_at(rope, x, positions) : rope.apply(x);
}

}  // namespace

MultiHeadLatentAttentionImpl::MultiHeadLatentAttentionImpl(const config::Config& c) {
  const auto& m = c.model;
  const auto& a = m.attention;
  n_heads_ = m.n_heads;
  d_c_ = a.kv_lora_rank;
  d_cq_ = a.q_lora_rank;
  d_n_ = a.qk_nope_head_dim;
  d_r_ = a.qk_rope_head_dim;
  d_v_ = a.v_head_dim;
  scale_ = a.softmax_scale > 0 ? a.softmax_scale : 1.0 / std::sqrt(static_cast<double>(d_n_ + d_r_));
  const auto& prec = c.precision;
  const int64_t D = m.d_model, H = n_heads_, d_qk = d_n_ + d_r_;
  if (d_cq_ > 0) {
    wq_a = register_module("wq_a", Linear(D, d_cq_, prec));
    q_norm = register_module("q_norm", RMSNorm(d_cq_, m.norm_eps));
    wq_b = register_module("wq_b", Linear(d_cq_, H * d_qk, prec));
  } else {
    wq = register_module("wq", Linear(D, H * d_qk, prec));
  }
  wkv_a = register_module("wkv_a", Linear(D, d_c_ + d_r_, prec));
  kv_norm = register_module("kv_norm", RMSNorm(d_c_, m.norm_eps));
  wkv_b = register_module("wkv_b", Linear(d_c_, H * (d_n_ + d_v_), prec));
  wo = register_module("wo", Linear(H * d_v_, D, prec));
}

std::pair<torch::Tensor, torch::Tensor> MultiHeadLatentAttentionImpl::queries(const torch::Tensor& x, const Rope& rope,
                                                                              const KVCache* cache,
                                                                              const torch::Tensor& positions) {
  const int64_t B = x.size(0), T = x.size(1);
  auto q = (d_cq_ > 0 ? wq_b(q_norm(wq_a(x))) : wq(x)).view({B, T, n_heads_, d_n_ + d_r_});
  return {q.narrow(-1, 0, d_n_), rotate(rope, q.narrow(-1, d_n_, d_r_), cache, positions)};
}

torch::Tensor MultiHeadLatentAttentionImpl::latent_rows(const torch::Tensor& x, const Rope& rope, const KVCache* cache,
                                                        const torch::Tensor& positions) {
  const int64_t B = x.size(0), T = x.size(1);
  auto kv = wkv_a(x);  // [B, T, d_c + d_R]
  auto c = kv_norm(kv.narrow(-1, 0, d_c_));
  auto k_pe = rotate(rope, kv.narrow(-1, d_c_, d_r_).view({B, T, 1, d_r_}), cache, positions);
  return torch::cat({c.unsqueeze(2), k_pe}, -1);  // [B, T, 1, d_c + d_R]
}

torch::Tensor MultiHeadLatentAttentionImpl::forward(const torch::Tensor& x, const Rope& rope) {
  auto [q_nope, q_pe] = queries(x, rope, nullptr);
  return causal_naive(q_nope, q_pe, latent_rows(x, rope, nullptr));
}

torch::Tensor MultiHeadLatentAttentionImpl::causal_naive(const torch::Tensor& q_nope, const torch::Tensor& q_pe,
                                                         const torch::Tensor& rows) {
  const int64_t B = rows.size(0), T = rows.size(1), H = n_heads_;
  auto kvb = wkv_b(rows.narrow(-1, 0, d_c_).squeeze(2)).view({B, T, H, d_n_ + d_v_});
  auto k = torch::cat({kvb.narrow(-1, 0, d_n_), rows.narrow(-1, d_c_, d_r_).expand({B, T, H, d_r_})}, -1);
  auto q = torch::cat({q_nope, q_pe}, -1);
  auto v = kvb.narrow(-1, d_n_, d_v_);
  return wo(causal_attention(q, k, v, scale_));
}

torch::Tensor MultiHeadLatentAttentionImpl::forward_cached(const torch::Tensor& x, const Rope& rope, KVCache& cache,
                                                           int64_t layer) {
  const int64_t B = x.size(0), S = x.size(1);
  auto [q_nope, q_pe] = queries(x, rope, &cache);
  auto rows = latent_rows(x, rope, &cache);
  cache.write(layer, 0, rows);
  // A prefill of equal prompts: the training forward's causal attention over the step's rows
  // (the absorbed decode kernel is for few queries per sequence).
  if (cache.fresh_uniform()) return causal_naive(q_nope, q_pe, rows.to(q_nope.scalar_type()));
  auto o = decode_path == MlaDecodePath::kAbsorbed ? decode_absorbed(q_nope, q_pe, cache, layer)
                                                   : decode_naive(q_nope, q_pe, cache, layer);
  return wo(o.reshape({B, S, n_heads_ * d_v_}));
}

// Decompress every cached latent into per-head keys and values, then attend.
torch::Tensor MultiHeadLatentAttentionImpl::decode_naive(const torch::Tensor& q_nope, const torch::Tensor& q_pe,
                                                         KVCache& cache, int64_t layer) {
  const int64_t B = q_nope.size(0), H = n_heads_, L = cache.max_total();
  auto rows = cache.gather(layer, 0, L);  // [B, L, 1, d_c + d_R]
  rows = rows.to(q_nope.scalar_type());
  auto kvb = wkv_b(rows.narrow(-1, 0, d_c_).squeeze(2)).view({B, L, H, d_n_ + d_v_});
  auto k = torch::cat({kvb.narrow(-1, 0, d_n_), rows.narrow(-1, d_c_, d_r_).expand({B, L, H, d_r_})}, -1);
  return attend_over_cache(torch::cat({q_nope, q_pe}, -1), k, kvb.narrow(-1, d_n_, d_v_), cache, scale_);
}

// q^C_i . k^C_{j,i} = (W_UK,i^T q^C_i) . c_j: the query moves into latent space, the attention is
// MQA over the cached rows [c_j ; k^R_j] (value: c_j), and W_UV,i maps each head's latent output
// back to d_v. The fold uses the fp32 master weight of wkv_b.
torch::Tensor MultiHeadLatentAttentionImpl::decode_absorbed(const torch::Tensor& q_nope, const torch::Tensor& q_pe,
                                                            KVCache& cache, int64_t layer) {
  const int64_t B = q_nope.size(0), S = q_nope.size(1);
  auto q = absorbed_queries(q_nope, q_pe, cache.pool(layer, 0).scalar_type());  // [B, S, H, d_c + d_R]

  // The op takes each sequence's S queries as its LAST S cache positions. A sequence with fewer
  // new tokens (n < S, the rest padding) is shifted right by S - n so that its real queries line
  // up with its last n positions, and shifted back afterwards.
  bool ragged = false;
  std::vector<int64_t> pad(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) ragged |= (pad[b] = S - cache.n_new()[b]) != 0;
  torch::Tensor shift_in, shift_out;
  if (ragged) {
    auto s = torch::arange(S, torch::kInt64).view({1, S});
    auto p = torch::tensor(pad, torch::kInt64).view({B, 1});
    auto dev = q.device();
    shift_in = (s - p).clamp(0, S - 1).to(dev).view({B, S, 1, 1});
    shift_out = (s + p).clamp(0, S - 1).to(dev).view({B, S, 1, 1});
    q = q.gather(1, shift_in.expand_as(q));
  }
  auto [out, lse] =
      ops::mla_decode(q.contiguous(), cache.pool(layer, 0), cache.block_table(), cache.seq_lens_after(), d_c_, scale_);
  out = out.to(q_nope.scalar_type());  // [B, S, H, d_c]
  if (ragged) out = out.gather(1, shift_out.expand_as(out)) * cache.valid().view({B, S, 1, 1}).to(out.scalar_type());
  return absorbed_values(out);
}

torch::Tensor MultiHeadLatentAttentionImpl::absorbed_queries(const torch::Tensor& q_nope, const torch::Tensor& q_pe,
                                                             torch::ScalarType dtype) {
  auto w = wkv_b->weight.view({n_heads_, d_n_ + d_v_, d_c_});
  auto q_lat = torch::einsum("bshd,hdc->bshc", {q_nope, w.narrow(1, 0, d_n_)});
  return torch::cat({q_lat, q_pe}, -1).to(dtype);
}

torch::Tensor MultiHeadLatentAttentionImpl::absorbed_values(const torch::Tensor& out) {
  auto w = wkv_b->weight.view({n_heads_, d_n_ + d_v_, d_c_});
  return torch::einsum("bshc,hvc->bshv", {out, w.narrow(1, d_n_, d_v_)});
}

std::pair<torch::Tensor, torch::Tensor> MultiHeadLatentAttentionImpl::decode_paged(const torch::Tensor& x,
                                                                                   const Rope& rope,
                                                                                   const torch::Tensor& kv_cache,
                                                                                   const torch::Tensor& block_table,
                                                                                   const torch::Tensor& seq_lens) {
  TORCH_CHECK(x.dim() == 3 && kv_cache.dim() == 4 && block_table.dim() == 2 && seq_lens.dim() == 1,
              "MLA decode: expected x [B, S, C], kv_cache [NB, BS, 1, D], block_table [B, MB], seq_lens [B]");
  TORCH_CHECK(seq_lens.size(0) == x.size(0) && block_table.size(0) == x.size(0),
              "MLA decode: seq_lens and block_table need one row per sequence of x (", x.size(0), ")");
  TORCH_CHECK(kv_cache.size(3) == d_c_ + d_r_, "MLA decode: kv_cache rows hold ", kv_cache.size(3),
              " values, expected kv_lora_rank + qk_rope_head_dim = ", d_c_ + d_r_);
  torch::NoGradGuard ng;
  const int64_t B = x.size(0), S = x.size(1), bs = kv_cache.size(1);
  auto positions = seq_lens.to(torch::kLong).view({B, 1}) + torch::arange(S, torch::kLong).view({1, S});
  TORCH_CHECK(positions.max().item<int64_t>() < std::min(rope.cos.size(0), block_table.size(1) * bs),
              "MLA decode: position ", positions.max().item<int64_t>(), " is past the cache (",
              block_table.size(1) * bs, " rows per sequence) or the rotary tables (", rope.cos.size(0), ")");
  auto [q_nope, q_pe] = queries(x, rope, nullptr, positions);
  auto slots = block_table.to(torch::kLong).gather(1, positions.floor_divide(bs)) * bs + positions.remainder(bs);
  kv_cache.view({-1, kv_cache.size(3)})
      .index_copy_(0, slots.flatten(),
                   latent_rows(x, rope, nullptr, positions).reshape({B * S, -1}).to(kv_cache.dtype()));
  auto new_lens = (seq_lens + S).to(torch::kInt);
  auto q = absorbed_queries(q_nope, q_pe, kv_cache.scalar_type()).contiguous();
  auto [out, lse] = ops::mla_decode(q, kv_cache, block_table, new_lens, d_c_, scale_);
  return {wo(absorbed_values(out.to(x.scalar_type())).reshape({B, S, n_heads_ * d_v_})), new_lens};
}

}  // namespace ts::nn
