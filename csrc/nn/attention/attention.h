// The attention family. Every kind maps x [B, T, C] -> [B, T, C] with causal masking and
// rotary positions, and reports what its KV cache holds per token and layer.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "csrc/config/config.h"
#include "csrc/nn/attention/kv_cache.h"
#include "csrc/nn/layers.h"

namespace ts::nn {

class AttentionImpl : public torch::nn::Module {
 public:
  // x [B, T, C]; rope covers at least T positions.
  virtual torch::Tensor forward(const torch::Tensor& x, const Rope& rope) = 0;
  // Values (not bytes) cached per token per layer for incremental decoding.
  virtual int64_t kv_cache_values_per_token() const = 0;
  // Width of the rotary part of each head (the Rope tables are built for it).
  virtual int64_t rope_dim() const = 0;
  // The tensors one layer caches per token (kv_cache.h); their values add up to
  // kv_cache_values_per_token().
  virtual std::vector<CachePlane> cache_planes() const = 0;
  // Incremental forward inside a cache step (KVCache::begin_step): x [B, S, C] holds the step's
  // tokens (row b's first cache.n_new()[b] are real, the rest padding with zero outputs). Writes
  // this layer's cache rows for them, then attends over every cached position. rope covers
  // cache.capacity() positions. Returns [B, S, C].
  virtual torch::Tensor forward_cached(const torch::Tensor& x, const Rope& rope, KVCache& cache, int64_t layer) = 0;
};

std::shared_ptr<AttentionImpl> make_attention(const config::Config& cfg);

// Causal attention of every position over the positions up to it: q [B, T, H, Dq], k [B, T, Hk,
// Dq], v [B, T, Hk, Dv] (Hk divides H; consecutive query heads share a K/V head). scale: the
// softmax scale (nullopt: 1/sqrt(Dq)). Returns [B, T, H * Dv], the heads side by side.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               std::optional<double> scale);

// Multi-head attention with n_kv_heads key/value heads (MHA when equal to n_heads).
class GroupedQueryAttentionImpl : public AttentionImpl {
 public:
  GroupedQueryAttentionImpl(int64_t d_model, int64_t n_heads, int64_t n_kv_heads,
                            const config::PrecisionConfig& precision);
  torch::Tensor forward(const torch::Tensor& x, const Rope& rope) override;
  int64_t kv_cache_values_per_token() const override { return 2 * n_kv_heads_ * head_dim_; }
  int64_t rope_dim() const override { return head_dim_; }
  std::vector<CachePlane> cache_planes() const override {
    return {{n_kv_heads_, head_dim_}, {n_kv_heads_, head_dim_}};  // K, V
  }
  torch::Tensor forward_cached(const torch::Tensor& x, const Rope& rope, KVCache& cache, int64_t layer) override;
  int64_t n_heads() const { return n_heads_; }
  int64_t n_kv_heads() const { return n_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }

  Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr};

 private:
  int64_t n_heads_, n_kv_heads_, head_dim_;
};

}  // namespace ts::nn
