#include "csrc/nn/attention/decode.h"

namespace ts::nn {

namespace {

KVCache make_cache(const Transformer& m, int64_t batch, int64_t max_tokens, int64_t block_size, bool shuffle) {
  TORCH_CHECK(m->n_layers() >= 1, "Decoder: the model has no blocks");
  const auto& w = m->embed->weight;
  // bf16 pools on CUDA (what the mla_decode kernel reads, and half the bytes); the parameters'
  // dtype elsewhere (the CPU paths run fp32).
  auto opts = w.options().requires_grad(false);
  if (w.is_cuda()) opts = opts.dtype(torch::kBFloat16);
  return KVCache(m->n_layers(), m->blocks[0]->attn->cache_planes(), batch, max_tokens, block_size, opts, shuffle,
                 /*shuffle_seed=*/0x5eed);
}

}  // namespace

Decoder::Decoder(Transformer model, const config::Config& cfg, int64_t batch, int64_t max_tokens, int64_t block_size,
                 bool shuffle_blocks)
    : model_(std::move(model)),
      cache_(make_cache(model_, batch, max_tokens, block_size, shuffle_blocks)),
      rope_(Rope::make(model_->blocks[0]->attn->rope_dim(), cache_.capacity(), cfg.model.rope_theta,
                       model_->embed->weight.device())) {}

torch::Tensor Decoder::step(const torch::Tensor& tokens, const std::vector<int64_t>& n_new) {
  torch::NoGradGuard ng;
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(0) == cache_.batch(), "Decoder::step: expected tokens [", cache_.batch(),
              ", S], got ", tokens.sizes());
  cache_.begin_step(n_new, tokens.size(1));
  try {
    auto h = model_->embed_tokens(tokens);
    for (int64_t l = 0; l < model_->n_layers(); ++l) {
      auto& blk = model_->blocks[l];
      h = h + blk->attn->forward_cached(blk->attn_norm(h), rope_, cache_, l);
      h = h + blk->ffn(blk->ffn_norm(h));
    }
    auto logits = model_->logits(h);
    cache_.end_step();
    return logits;
  } catch (...) {
    cache_.abort_step();
    throw;
  }
}

void set_mla_decode_path(Transformer& model, MlaDecodePath path) {
  for (auto& blk : model->blocks)
    if (auto mla = std::dynamic_pointer_cast<MultiHeadLatentAttentionImpl>(blk->attn)) mla->decode_path = path;
}

torch::Tensor Decoder::step(const torch::Tensor& tokens) {
  return step(tokens, std::vector<int64_t>(static_cast<size_t>(tokens.size(0)), tokens.size(1)));
}

}  // namespace ts::nn
