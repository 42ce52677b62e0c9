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

torch::Tensor BlockImpl::forward_cached(const torch::Tensor& x, const Rope& rope, KVCache& cache, int64_t layer,
                                        const std::vector<int64_t>* ffn_rows) {
  auto h = x + attn->forward_cached(attn_norm(x), rope, cache, layer);
  return feed_forward(ffn_rows ? rows_at(h, *ffn_rows).unsqueeze(1) : h);
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
  // The head computes in fp32 whatever precision.kind says (V3 keeps it out of FP8), through the
  // projection layer every module uses (so decoding takes its few-row path too).
  head = register_module("head", Linear(cfg.d_model, cfg.vocab_size, config::PrecisionConfig{}));

  // Init: N(0, std) everywhere, residual output projections scaled by 1/sqrt(2 * layers) (GPT-2).
  const double out_std = cfg.init_std / std::sqrt(2.0 * cfg.n_layers);
  auto init = [&](torch::nn::Module& m) {
    torch::NoGradGuard ng;
    for (auto& p : m.named_parameters()) {
      const auto& name = p.key();
      if (p.value().dim() < 2) continue;  // norm weights stay 1
      const bool residual_out = name.ends_with("wo.weight") || name.ends_with("w2.weight");
      p.value().normal_(0.0, residual_out ? out_std : cfg.init_std);
    }
  };
  init(*this);
  // The MTP modules are built and initialized after the main model, so the main model's weights
  // come from the same random draws whatever the depth (and depth 0 is the model without MTP).
  if (cfg.mtp.depth > 0) {
    auto mlist = register_module("mtp", torch::nn::ModuleList());
    for (int64_t k = 1; k <= cfg.mtp.depth; ++k) {
      mtp.push_back(MtpModule(c, k));
      mlist->push_back(mtp.back());
      init(*mtp.back());
    }
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

ModelOutputs TransformerImpl::forward_outputs(const torch::Tensor& tokens) {
  auto h = run_blocks(embed_tokens(tokens), 0, n_layers());
  return {logits(h), mtp_logits(h, tokens)};
}

std::vector<torch::Tensor> TransformerImpl::mtp_logits(const torch::Tensor& h, const torch::Tensor& tokens) {
  std::vector<torch::Tensor> out;
  if (mtp.empty()) return out;
  const int64_t T = tokens.size(1);
  const Rope& rope = rope_for(h.device());
  auto prev = h;
  for (int64_t k = 1; k <= mtp_depth() && k < T; ++k) {  // depth k needs T > k
    prev = mtp[k - 1]->forward(prev.narrow(1, 0, T - k), embed_tokens(tokens.narrow(1, k, T - k)), rope);
    out.push_back(head(mtp[k - 1]->norm(prev)));
  }
  return out;
}

torch::Tensor TransformerImpl::loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.flatten(0, 1).to(torch::kFloat), targets.flatten());
}

LmLoss TransformerImpl::lm_loss(const ModelOutputs& out, const torch::Tensor& targets) {
  LmLoss l{loss(out.logits, targets), {}};
  const int64_t T = targets.size(1);
  for (size_t i = 0; i < out.mtp_logits.size(); ++i) {
    const int64_t k = static_cast<int64_t>(i) + 1;
    l.depth.push_back(loss(out.mtp_logits[i], targets.narrow(1, k, T - k)));
  }
  return l;
}

torch::Tensor TransformerImpl::head_objective(const torch::Tensor& h, const torch::Tensor& tokens,
                                              const torch::Tensor& targets, double lambda, LmLoss* parts) {
  LmLoss l = lm_loss({logits(h), mtp_logits(h, tokens)}, targets);
  l.mtp_aux = mtp_aux_loss();
  auto objective = l.objective(lambda);
  if (l.mtp_aux.defined()) objective = objective + l.mtp_aux;
  if (parts) *parts = std::move(l);
  return objective;
}

torch::Tensor LmLoss::objective(double lambda) const {
  if (depth.empty()) return main;
  auto sum = depth[0];
  for (size_t i = 1; i < depth.size(); ++i) sum = sum + depth[i];
  return main + (lambda / static_cast<double>(depth.size())) * sum;
}

torch::Tensor TransformerImpl::accuracy(const torch::Tensor& logits, const torch::Tensor& targets) {
  return (logits.argmax(-1) == targets).to(torch::kFloat).mean();
}

double TransformerImpl::mtp_loss_weight(int64_t step) const {
  const auto& m = cfg_.mtp;
  return m.switch_step >= 0 && step >= m.switch_step ? m.switch_loss_weight : m.loss_weight;
}

std::vector<std::shared_ptr<MoEImpl>> TransformerImpl::moe_layers() const {
  std::vector<std::shared_ptr<MoEImpl>> out;
  for (const auto& b : blocks)
    if (b->moe) out.push_back(b->moe.ptr());
  for (const auto& m : mtp)
    if (m->block->moe) out.push_back(m->block->moe.ptr());
  return out;
}

namespace {
void add_aux(torch::Tensor& sum, const MoE& m) {
  if (m && m->aux_loss().defined()) sum = sum.defined() ? sum + m->aux_loss() : m->aux_loss();
}
}  // namespace

torch::Tensor TransformerImpl::aux_loss(int64_t begin, int64_t end) const {
  torch::Tensor sum;
  for (int64_t i = begin; i < end; ++i) add_aux(sum, blocks[i]->moe);
  return sum;
}

torch::Tensor TransformerImpl::mtp_aux_loss() const {
  torch::Tensor sum;
  for (const auto& m : mtp) add_aux(sum, m->block->moe);
  return sum;
}

torch::Tensor TransformerImpl::aux_loss() const {
  auto main = aux_loss(0, n_layers()), extra = mtp_aux_loss();
  if (!extra.defined()) return main;
  return main.defined() ? main + extra : extra;
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
