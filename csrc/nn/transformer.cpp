#include "csrc/nn/transformer.h"

#include <cmath>

#include "csrc/nn/model_config.h"

namespace ts::nn {

BlockImpl::BlockImpl(const config::Config& c, int64_t layer) {
  const auto& cfg = c.model;
  attn_norm = register_module("attn_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  attn = register_module("attn", make_attention(c));
  ffn_norm = register_module("ffn_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  if (cfg.ffn == "moe" && layer >= cfg.moe.first_k_dense)
    moe = register_module("ffn", MoE(c));
  else
    ffn = register_module("ffn", SwiGLU(cfg.d_model, cfg.ffn_hidden, c.precision));
}

torch::Tensor BlockImpl::feed_forward(const torch::Tensor& h) {
  auto n = ffn_norm(h);
  return h + (moe ? moe(n) : ffn(n));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const Rope& rope) {
  return feed_forward(x + attn->forward(attn_norm(x), rope));
}

torch::Tensor BlockImpl::forward_cached(const torch::Tensor& x, const Rope& rope, KVCache& cache, int64_t layer) {
  return feed_forward(x + attn->forward_cached(attn_norm(x), rope, cache, layer));
}

TransformerImpl::TransformerImpl(const config::Config& c) : cfg_(c.model), max_seq_len_(c.data.seq_len) {
  const auto& cfg = c.model;
  check_model_config(c);
  embed = register_module("embed", torch::nn::Embedding(cfg.vocab_size, cfg.d_model));
  auto list = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    blocks.push_back(Block(c, i));
    list->push_back(blocks.back());
  }
  norm = register_module("norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  head = register_module("head", torch::nn::Linear(torch::nn::LinearOptions(cfg.d_model, cfg.vocab_size).bias(false)));

  // Init: N(0, std) everywhere, residual output projections scaled by 1/sqrt(2 * layers) (GPT-2).
  torch::NoGradGuard ng;
  const double out_std = cfg.init_std / std::sqrt(2.0 * cfg.n_layers);
  for (auto& p : named_parameters()) {
    const auto& name = p.key();
    if (p.value().dim() < 2) continue;  // norm weights stay 1
    const bool residual_out = name.ends_with("wo.weight") || name.ends_with("w2.weight");
    p.value().normal_(0.0, residual_out ? out_std : cfg.init_std);
  }
  rope_ = Rope::make(blocks.empty() ? 2 : blocks[0]->attn->rope_dim(), max_seq_len_, cfg.rope_theta, torch::kCPU);
}

const Rope& TransformerImpl::rope_for(const torch::Device& d) {
  if (rope_.cos.device() != d) rope_ = {rope_.cos.to(d), rope_.sin.to(d)};
  return rope_;
}

torch::Tensor TransformerImpl::embed_tokens(const torch::Tensor& tokens) { return embed(tokens); }

torch::Tensor TransformerImpl::run_blocks(torch::Tensor h, int64_t begin, int64_t end) {
  TORCH_CHECK(h.size(1) <= max_seq_len_, "transformer: sequence length ", h.size(1), " exceeds the model's ",
              max_seq_len_, " (data.seq_len)");
  const Rope& rope = rope_for(h.device());
  for (int64_t i = begin; i < end; ++i) h = blocks[i]->forward(h, rope);
  return h;
}

torch::Tensor TransformerImpl::logits(const torch::Tensor& h) { return head(norm(h)); }

torch::Tensor TransformerImpl::forward(const torch::Tensor& tokens) {
  return logits(run_blocks(embed_tokens(tokens), 0, n_layers()));
}

torch::Tensor TransformerImpl::loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.flatten(0, 1).to(torch::kFloat), targets.flatten());
}

std::vector<std::shared_ptr<MoEImpl>> TransformerImpl::moe_layers() const {
  std::vector<std::shared_ptr<MoEImpl>> out;
  for (const auto& b : blocks)
    if (b->moe) out.push_back(b->moe.ptr());
  return out;
}

torch::Tensor TransformerImpl::aux_loss(int64_t begin, int64_t end) const {
  torch::Tensor sum;
  for (int64_t i = begin; i < end; ++i)
    if (const auto& m = blocks[i]->moe; m && m->aux_loss().defined())
      sum = sum.defined() ? sum + m->aux_loss() : m->aux_loss();
  return sum;
}

void TransformerImpl::after_optimizer_step() {
  for (const auto& m : moe_layers()) m->update_bias();
}

int64_t TransformerImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

int64_t TransformerImpl::kv_cache_values_per_token() const {
  int64_t n = 0;
  for (const auto& b : blocks) n += b->attn->kv_cache_values_per_token();
  return n;
}

}  // namespace ts::nn
