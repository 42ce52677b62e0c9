#include "csrc/nn/moe_router.h"

#include <limits>
#include <string>

namespace ts::nn {

Routing route(const torch::Tensor& logits, const torch::Tensor& bias, const config::MoeConfig& c) {
  const int64_t T = logits.size(0), E = logits.size(1), G = c.n_group, K = c.top_k;
  Routing r;
  r.scores = c.score_func == "sigmoid" ? torch::sigmoid(logits) : torch::softmax(logits, -1);
  // The choice never needs gradients: only the gathered weights do.
  auto choice = r.scores.detach();
  if (bias.defined()) choice = choice + bias;
  if (G > 1 && c.topk_group < G) {
    auto grouped = choice.view({T, G, E / G});
    auto group_score = E / G >= 2 ? std::get<0>(grouped.topk(2, -1)).sum(-1) : grouped.squeeze(-1);  // [T, G]
    auto best = std::get<1>(group_score.topk(c.topk_group, -1));                                     // [T, topk_group]
    auto keep = torch::zeros({T, G}, choice.options().dtype(torch::kBool)).scatter_(1, best, true);
    auto keep_e = keep.unsqueeze(-1).expand({T, G, E / G}).reshape({T, E});
    choice = choice.masked_fill(keep_e.logical_not(), -std::numeric_limits<float>::infinity());
  }
  r.topk_ids = std::get<1>(choice.topk(K, -1));
  r.topk_weights = r.scores.gather(1, r.topk_ids);
  if (c.score_func == "sigmoid" || c.norm_topk_prob)
    r.topk_weights = r.topk_weights / (r.topk_weights.sum(-1, true) + 1e-20);
  if (c.routed_scaling_factor != 1.0) r.topk_weights = r.topk_weights * c.routed_scaling_factor;
  return r;
}

torch::Tensor expert_counts(const torch::Tensor& topk_ids, int64_t experts) {
  return torch::bincount(topk_ids.flatten(), {}, experts);
}

torch::Tensor normalized_scores(const Routing& r, const config::MoeConfig& c) {
  return c.score_func == "softmax" ? r.scores : r.scores / (r.scores.sum(-1, true) + 1e-20);
}

torch::Tensor expert_balance_loss(const Routing& r, const config::MoeConfig& c, double alpha) {
  const int64_t T = r.topk_ids.size(0), K = r.topk_ids.size(1), E = r.scores.size(1);
  auto f = expert_counts(r.topk_ids, E).to(torch::kFloat) * (static_cast<double>(E) / static_cast<double>(K * T));
  auto P = normalized_scores(r, c).mean(0);
  return alpha * (f * P).sum();
}

torch::Tensor sequence_balance_loss(const Routing& r, const config::MoeConfig& c, int64_t sequences, double alpha) {
  const int64_t T = r.topk_ids.size(0), K = r.topk_ids.size(1), E = r.scores.size(1), S = T / sequences;
  TORCH_CHECK(S * sequences == T, "sequence_balance_loss: ", T, " tokens do not split into ", sequences, " sequences");
  auto ids = r.topk_ids.view({sequences, S * K});
  auto counts = torch::zeros({sequences, E}, r.scores.options())
                    .scatter_add_(1, ids, torch::ones({sequences, S * K}, r.scores.options()));
  auto f = counts * (static_cast<double>(E) / static_cast<double>(K * S));  // [B, E]
  auto P = normalized_scores(r, c).view({sequences, S, E}).mean(1);         // [B, E]
  return alpha * (f * P).sum(-1).mean();
}

double max_violation(const torch::Tensor& load) {
  auto l = load.to(torch::kDouble);
  const double mean = l.mean().item<double>();
  return mean > 0 ? (l.max().item<double>() - mean) / mean : 0.0;
}

}  // namespace ts::nn
