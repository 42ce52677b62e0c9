// Multi-token prediction (DeepSeek-V3 §2.2): model.mtp.depth sequential modules after the main
// model. Module k (1..D) sees, at position i, the previous depth's hidden state h^{k-1}_i (the
// main model's last block output for k = 1) and the embedding of token i+k:
//
//   h'_i  = proj [hnorm(h^{k-1}_i) ; enorm(Emb(t_{i+k}))]      (proj: 2C -> C)
//   h^k   = Block_k(h')                                        (causal over positions 0..i)
//   logits of token i+k+1 = Head(norm_k(h^k_i))
//
// Block_k is a block of the model's own kind (attention kind, MoE from moe.first_k_dense on, the
// precision of every projection); the embedding and the output head are the main model's
// (TransformerImpl holds the modules and passes them in). The parameter names follow the
// Hugging Face DeepSeek-V3 layout: hnorm, enorm, eh_proj, block, norm (its shared_head.norm).
#pragma once

#include <torch/torch.h>

#include "csrc/config/config.h"
#include "csrc/nn/layers.h"
#include "csrc/nn/linear.h"

namespace ts::nn {

class BlockImpl;
class KVCache;

class MtpModuleImpl : public torch::nn::Module {
 public:
  // depth: k (1-based); the block is built as layer model.n_layers + k - 1.
  MtpModuleImpl(const config::Config& cfg, int64_t depth);

  // h_prev [B, S, C] the previous depth's hidden states, next_emb [B, S, C] the embeddings of
  // the tokens k further on; returns h^k [B, S, C] (before norm). Positions 0..S-1 of the rope.
  torch::Tensor forward(const torch::Tensor& h_prev, const torch::Tensor& next_emb, const Rope& rope);
  // The same inside a KV-cache step of `cache` (this module's layer `layer` there); with out_rows,
  // only row out_rows[b] of each sequence is computed past the attention (BlockImpl::forward_cached):
  // [B, 1, C].
  torch::Tensor forward_cached(const torch::Tensor& h_prev, const torch::Tensor& next_emb, const Rope& rope,
                               KVCache& cache, int64_t layer, const std::vector<int64_t>* out_rows = nullptr);

  int64_t depth() const { return depth_; }

  RMSNorm hnorm{nullptr}, enorm{nullptr}, norm{nullptr};
  Linear eh_proj{nullptr};
  std::shared_ptr<BlockImpl> block;

 private:
  torch::Tensor combine(const torch::Tensor& h_prev, const torch::Tensor& next_emb);
  int64_t depth_;
};
TORCH_MODULE(MtpModule);

}  // namespace ts::nn
