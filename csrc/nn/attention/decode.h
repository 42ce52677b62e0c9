// Incremental decoding of a whole Transformer: one KVCache for all layers, filled step by step
// through each block's AttentionImpl::forward_cached. Used by the decode benchmark of the
// attention ablation and by the tests that check cached decoding against the full forward.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "csrc/config/config.h"
#include "csrc/nn/attention/kv_cache.h"
#include "csrc/nn/attention/mla.h"
#include "csrc/nn/transformer.h"

namespace ts::nn {

class Decoder {
 public:
  // Caches up to max_tokens tokens for each of `batch` sequences in blocks of block_size rows
  // (shuffle_blocks: hand the blocks out in a random order, to exercise the paging). The cache
  // takes the dtype and device of the model's parameters. cfg is the model's config.
  Decoder(Transformer model, const config::Config& cfg, int64_t batch, int64_t max_tokens, int64_t block_size = 64,
          bool shuffle_blocks = false);

  // tokens [B, S] int64: row b's first n_new[b] are real tokens appended to sequence b, the rest
  // padding. Returns logits [B, S, V] (padding rows hold no meaning). No autograd graph is kept.
  torch::Tensor step(const torch::Tensor& tokens, const std::vector<int64_t>& n_new);
  torch::Tensor step(const torch::Tensor& tokens);  // every token real

  KVCache& cache() { return cache_; }
  const Rope& rope() const { return rope_; }

 private:
  Transformer model_;
  KVCache cache_;
  Rope rope_;
};

// Selects the decode path of every MLA block (other kinds have one path).
void set_mla_decode_path(Transformer& model, MlaDecodePath path);

}  // namespace ts::nn
