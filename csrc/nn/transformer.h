// The decoder-only transformer every experiment trains: embedding, a list of blocks, final norm
// and output head. Blocks are addressed by index so pipeline stages can own contiguous ranges.
#pragma once

#include <torch/torch.h>

#include "csrc/config/config.h"
#include "csrc/nn/attention/attention.h"
#include "csrc/nn/layers.h"
#include "csrc/nn/moe.h"
#include "csrc/nn/mtp.h"

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
  // With ffn_rows, only row ffn_rows[b] of each sequence b goes on through the FFN (every row's keys
  // and values are still cached): [B, 1, C], for a caller that needs one row's output.
  torch::Tensor forward_cached(const torch::Tensor& x, const Rope& rope, KVCache& cache, int64_t layer,
                               const std::vector<int64_t>* ffn_rows = nullptr);
  RMSNorm attn_norm{nullptr}, ffn_norm{nullptr};
  std::shared_ptr<AttentionImpl> attn;
  SwiGLU ffn{nullptr};
  MoE moe{nullptr};

 private:
  torch::Tensor feed_forward(const torch::Tensor& h);  // h + FFN(norm(h)), dense or MoE
};
TORCH_MODULE(Block);

// The outputs of a training or evaluation forward: the main model's logits [B, T, V] and, with
// model.mtp.depth = D > 0, depth k's logits [B, T-k, V] (k = 1..D): at position i, token i+k+1.
struct ModelOutputs {
  torch::Tensor logits;
  std::vector<torch::Tensor> mtp_logits;
};

// The language-modelling losses of a batch (targets [B, T], the inputs shifted by one): the main
// next-token cross-entropy, and each MTP depth's against the targets k further on.
struct LmLoss {
  torch::Tensor main;                // scalar
  std::vector<torch::Tensor> depth;  // D scalars
  torch::Tensor mtp_aux;             // the MTP blocks' MoE balance losses (undefined when none)
  // What training minimizes: main + (lambda / D) * sum_k depth[k] (DeepSeek-V3 §2.2); main without MTP.
  torch::Tensor objective(double lambda) const;
};

class TransformerImpl : public torch::nn::Module {
 public:
  // Built from the model, precision and data sections (data.seq_len bounds the rotary tables).
  explicit TransformerImpl(const config::Config& cfg);

  torch::Tensor embed_tokens(const torch::Tensor& tokens);                // [B, T] -> [B, T, C]
  torch::Tensor run_blocks(torch::Tensor h, int64_t begin, int64_t end);  // blocks [begin, end)
  torch::Tensor logits(const torch::Tensor& h);                           // final norm + head
  torch::Tensor forward(const torch::Tensor& tokens);                     // [B, T] -> [B, T, V]
  // The main logits and every MTP depth's (tokens [B, T]); the MTP modules run on the main
  // model's last hidden states. Without MTP, mtp_logits is empty and logits equals forward().
  ModelOutputs forward_outputs(const torch::Tensor& tokens);
  // The MTP depths' logits from the main hidden states h [B, T, C] (run_blocks' output) of
  // inputs tokens [B, T]: depth k sees h^{k-1} at positions 0..T-k-1 and tokens k..T-1 (depths
  // k >= T have no position and are left out; training contexts are longer than the depth).
  std::vector<torch::Tensor> mtp_logits(const torch::Tensor& h, const torch::Tensor& tokens);
  // Mean next-token cross-entropy (nats) of the logits against targets [B, T].
  static torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& targets);
  // The main and the per-depth losses of outputs against targets [B, T].
  static LmLoss lm_loss(const ModelOutputs& out, const torch::Tensor& targets);
  // What a training step minimizes after the main blocks, from their output h [B, T, C] on inputs
  // tokens [B, T]: LmLoss::objective(lambda) plus the MTP blocks' MoE balance losses (the main
  // blocks' are the caller's: aux_loss(0, n_layers()), or per pipeline stage). The last pipeline
  // stage and pretraining both use it; `parts` (may be null) receives the separate losses.
  torch::Tensor head_objective(const torch::Tensor& h, const torch::Tensor& tokens, const torch::Tensor& targets,
                               double lambda, LmLoss* parts = nullptr);
  // Top-1 accuracy of logits [B, S, V] against targets [B, S].
  static torch::Tensor accuracy(const torch::Tensor& logits, const torch::Tensor& targets);
  // model.mtp.loss_weight, or model.mtp.switch_loss_weight from model.mtp.switch_step on.
  double mtp_loss_weight(int64_t step) const;
  int64_t mtp_depth() const { return static_cast<int64_t>(mtp.size()); }

  int64_t n_layers() const { return static_cast<int64_t>(blocks.size()); }
  const config::ModelConfig& config() const { return cfg_; }
  int64_t max_seq_len() const { return max_seq_len_; }  // data.seq_len: the forward's longest input
  // Mixture of experts hooks (csrc/nn/moe.h); a dense model has no MoE layers, no aux loss and
  // nothing to update. aux_loss: the balance losses of the last training forward (undefined when
  // none), to be added to the loss. after_optimizer_step: the loss-free bias updates.
  std::vector<std::shared_ptr<MoEImpl>> moe_layers() const;
  torch::Tensor aux_loss() const;                            // every MoE layer's, MTP blocks included
  torch::Tensor aux_loss(int64_t begin, int64_t end) const;  // of blocks [begin, end) (a pipeline stage)
  torch::Tensor mtp_aux_loss() const;                        // of the MTP blocks
  void after_optimizer_step();
  int64_t num_parameters() const;
  // KV-cache values per token for the whole model (all layers).
  int64_t kv_cache_values_per_token() const;

  torch::nn::Embedding embed{nullptr};
  std::vector<Block> blocks;
  RMSNorm norm{nullptr};
  Linear head{nullptr};
  std::vector<MtpModule> mtp;  // model.mtp.depth modules, registered as "mtp" (none when off)

 private:
  const Rope& rope_for(const torch::Device& d);
  config::ModelConfig cfg_;
  int64_t max_seq_len_;
  Rope rope_;
};
TORCH_MODULE(Transformer);

}  // namespace ts::nn
