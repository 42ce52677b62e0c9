#include "csrc/nn/moe.h"

#include <cmath>

#include "csrc/nn/layers.h"
#include "csrc/nn/model_config.h"
#include "csrc/nn/moe_router.h"
#include "csrc/ops/moe.h"

namespace ts::nn {

GroupedLinearImpl::GroupedLinearImpl(int64_t experts, int64_t in_features, int64_t out_features) {
  // nn.Linear's default bound; the transformer re-initializes every matrix anyway.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = register_parameter("weight", torch::empty({experts, out_features, in_features}).uniform_(-bound, bound));
}

torch::Tensor GroupedLinearImpl::forward(const torch::Tensor& x_sorted, const torch::Tensor& expert_offsets) {
  return ops::grouped_gemm(x_sorted, weight.to(x_sorted.scalar_type()), expert_offsets);
}

MoEImpl::MoEImpl(const config::Config& c) : cfg_(c.model.moe) {
  validate_moe_config(cfg_);
  const int64_t C = c.model.d_model, E = cfg_.n_routed_experts, F = cfg_.expert_hidden;
  router = register_parameter("router", torch::empty({E, C}).normal_(0.0, c.model.init_std));
  if (cfg_.loss_free) expert_bias = register_buffer("expert_bias", torch::zeros({E}));
  w13 = register_module("w13", GroupedLinear(E, C, 2 * F));
  w2 = register_module("w2", GroupedLinear(E, F, C));
  if (cfg_.n_shared_experts > 0) shared = register_module("shared", SwiGLU(C, cfg_.n_shared_experts * F, c.precision));
}

torch::Tensor MoEImpl::forward(const torch::Tensor& x) {
  const int64_t C = x.size(-1), E = cfg_.n_routed_experts, K = cfg_.top_k;
  auto h = x.reshape({-1, C});  // [T, C]
  const int64_t T = h.size(0), M = T * K;

  // Gating stays in fp32 (V3 keeps it out of low precision).
  auto logits = torch::matmul(h.to(torch::kFloat), router.t());  // [T, E]
  Routing r = route(logits.to(torch::kFloat), cfg_.loss_free ? expert_bias : torch::Tensor(), cfg_);
  auto [xs, s2t, offs] = ops::moe_permute(h, r.topk_ids, E);  // [M, C], [M], [E + 1]
  auto counts = offs.slice(0, 1) - offs.slice(0, 0, E);       // [E] slots per expert

  auto weights = r.topk_weights;  // [T, K]
  torch::Tensor dropped;
  if (cfg_.capacity_factor > 0 && is_training()) {
    // Each expert keeps its first `cap` slots in token order (the permutation is stable); the
    // dropped slots get gate weight 0, so they add nothing (their rows are still computed).
    const auto cap = static_cast<int64_t>(std::ceil(cfg_.capacity_factor * static_cast<double>(M) / E));
    auto expert_of_row = torch::repeat_interleave(torch::arange(E, offs.options()), counts, /*dim=*/0, M);
    auto rank = torch::arange(M, offs.options()) - offs.index_select(0, expert_of_row);  // [M] place in expert
    auto keep_row = rank < cap;
    auto keep_slot = torch::empty({M}, keep_row.options()).index_put_({s2t}, keep_row);
    weights = weights * keep_slot.view({T, K}).to(weights.scalar_type());
    dropped = keep_row.logical_not().sum();
  }

  auto ys = runner_ ? runner_(xs, offs) : local_experts(xs, offs);  // [M, C]
  auto y = ops::moe_unpermute(ys, s2t, weights.to(torch::kFloat));  // [T, C]
  if (shared) y = y + shared(h);

  {
    torch::NoGradGuard ng;
    load_ = load_.defined() ? load_ + counts : counts.clone();
    if (dropped.defined()) dropped_ = dropped_.defined() ? dropped_ + dropped : dropped;
    if (is_training()) step_load_ = step_load_.defined() ? step_load_ + counts : counts.clone();
  }
  aux_loss_ = torch::Tensor();
  if (is_training() && torch::GradMode::is_enabled()) {
    auto add = [&](torch::Tensor l) { aux_loss_ = aux_loss_.defined() ? aux_loss_ + l : l; };
    if (cfg_.aux_loss_alpha > 0) add(expert_balance_loss(r, cfg_, cfg_.aux_loss_alpha));
    if (cfg_.seq_aux_loss_alpha > 0)
      add(sequence_balance_loss(r, cfg_, x.dim() == 3 ? x.size(0) : 1, cfg_.seq_aux_loss_alpha));
  }
  return y.view(x.sizes());
}

torch::Tensor MoEImpl::local_experts(const torch::Tensor& xs, const torch::Tensor& offsets) {
  auto gu = w13(xs, offsets);    // [rows, 2F], F = expert_hidden
  auto act = swiglu_packed(gu);  // [rows, F]
  return w2(act, offsets);       // [rows, C]
}

namespace {

struct AttachAuxLoss : torch::autograd::Function<AttachAuxLoss> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& aux,
                               double scale) {
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["dtype"] = static_cast<int64_t>(aux.scalar_type());
    ctx->saved_data["device"] = aux.device();
    return h.view_as(h);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto options = torch::TensorOptions()
                             .dtype(static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt()))
                             .device(ctx->saved_data["device"].toDevice());
    return {grads[0], torch::full({}, ctx->saved_data["scale"].toDouble(), options), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor attach_aux_loss(const torch::Tensor& h, const torch::Tensor& aux, double scale) {
  if (!aux.defined()) return h;
  return AttachAuxLoss::apply(h, aux, scale);
}

void MoEImpl::update_bias() {
  if (!cfg_.loss_free || !step_load_.defined()) return;
  torch::NoGradGuard ng;
  auto load = step_load_.to(torch::kFloat);
  expert_bias.add_(torch::sign(load.mean() - load), cfg_.bias_update_speed);
  step_load_ = torch::Tensor();
}

MoEImpl::Load MoEImpl::take_load() {
  Load out;
  out.tokens = load_.defined() ? load_.cpu() : torch::zeros({cfg_.n_routed_experts}, torch::kLong);
  out.dropped = dropped_.defined() ? dropped_.item<int64_t>() : 0;
  load_ = dropped_ = torch::Tensor();
  return out;
}

nlohmann::json take_moe_stats(const std::vector<std::shared_ptr<MoEImpl>>& layers, const std::string& key,
                              bool with_load) {
  if (layers.empty()) return nlohmann::json::object();
  std::vector<double> vio;
  std::vector<std::vector<int64_t>> loads;
  int64_t dropped = 0;
  double mean = 0;
  for (const auto& m : layers) {
    auto l = m->take_load();
    vio.push_back(max_violation(l.tokens));
    mean += vio.back() / static_cast<double>(layers.size());
    dropped += l.dropped;
    if (with_load) {
      auto t = l.tokens.contiguous();
      loads.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    }
  }
  nlohmann::json j = {{key, mean}, {key + "_layers", vio}, {"dropped_tokens", dropped}};
  if (with_load) j["expert_load"] = loads;
  return j;
}

}  // namespace ts::nn
