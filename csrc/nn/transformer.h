// The decoder-only transformer every experiment trains: embedding, a list of blocks, final norm
// and output head. Blocks are addressed by index so pipeline stages can own contiguous ranges.
#pragma once

#include <torch/torch.h>

#include "csrc/config/config.h"
#include "csrc/nn/attention/attention.h"
#include "csrc/nn/layers.h"
#include "csrc/nn/moe.h"

namespace ts::nn {

// Pre-norm block: x + attn(norm(x)), then x + ffn(norm(x)). The FFN is the dense SwiGLU `ffn`, or,
// with model.ffn: moe from layer moe.first_k_dense on, the mixture of experts `moe` (both are
// registered as "ffn"; exactly one is non-null).
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const config::Config& cfg, int64_t layer);
  torch::Tensor forward(const torch::Tensor& x, const Rope& rope);
  // The same block over a KV-cache step (AttentionImpl::forward_cached): x [B, S, C] holds the
  // step's tokens; this layer's cache rows are written, attention reads every cached position.
  torch::Tensor forward_cached(const torch::Tensor& x, const Rope& rope, KVCache& cache, int64_t layer);
  RMSNorm attn_norm{nullptr}, ffn_norm{nullptr};
  std::shared_ptr<AttentionImpl> attn;
  SwiGLU ffn{nullptr};
  MoE moe{nullptr};

 private:
  torch::Tensor feed_forward(const torch::Tensor& h);  // h + FFN(norm(h)), dense or MoE
};
TORCH_MODULE(Block);

class TransformerImpl : public torch::nn::Module {
 public:
  // Built from the model, precision and data sections (data.seq_len bounds the rotary tables).
  explicit TransformerImpl(const config::Config& cfg);

  torch::Tensor embed_tokens(const torch::Tensor& tokens);                // [B, T] -> [B, T, C]
  torch::Tensor run_blocks(torch::Tensor h, int64_t begin, int64_t end);  // blocks [begin, end)
  torch::Tensor logits(const torch::Tensor& h);                           // final norm + head
  torch::Tensor forward(const torch::Tensor& tokens);                     // [B, T] -> [B, T, V]
  // Mean next-token cross-entropy (nats) of the logits against targets [B, T].
  static torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& targets);

  int64_t n_layers() const { return static_cast<int64_t>(blocks.size()); }
  const config::ModelConfig& config() const { return cfg_; }
  int64_t max_seq_len() const { return max_seq_len_; }  // data.seq_len: the forward's longest input
  // Mixture of experts hooks (csrc/nn/moe.h); a dense model has no MoE layers, no aux loss and
  // nothing to update. aux_loss: the balance losses of the last training forward (undefined when
  // none), to be added to the loss. after_optimizer_step: the loss-free bias updates.
  std::vector<std::shared_ptr<MoEImpl>> moe_layers() const;
  torch::Tensor aux_loss() const { return aux_loss(0, n_layers()); }
  torch::Tensor aux_loss(int64_t begin, int64_t end) const;  // of blocks [begin, end) (a pipeline stage)
  void after_optimizer_step();
  int64_t num_parameters() const;
  // KV-cache values per token for the whole model (all layers).
  int64_t kv_cache_values_per_token() const;

  torch::nn::Embedding embed{nullptr};
  std::vector<Block> blocks;
  RMSNorm norm{nullptr};
  torch::nn::Linear head{nullptr};

 private:
  const Rope& rope_for(const torch::Device& d);
  config::ModelConfig cfg_;
  int64_t max_seq_len_;
  Rope rope_;
};
TORCH_MODULE(Transformer);

}  // namespace ts::nn
