// DeepSeekMoE routing as plain functions of tensors: gate scores, group-limited top-K, gate
// weights, and the balance losses. The MoE module (csrc/nn/moe.h) composes them; tests call them
// directly. T tokens, E routed experts, K choices per token, B sequences of S tokens (T = B*S).
#pragma once

#include <torch/torch.h>

#include "csrc/config/config.h"

namespace ts::nn {

struct Routing {
  torch::Tensor topk_ids;      // [T, K] int64: chosen experts, by descending biased score
  torch::Tensor topk_weights;  // [T, K] fp32: gate weights g (differentiable in the logits)
  torch::Tensor scores;        // [T, E] fp32: softmax or sigmoid scores s (differentiable)
};

// logits [T, E] (fp32) -> routing. bias [E] (may be undefined) is the auxiliary-loss-free bias:
// it shifts the scores used to pick groups and experts, never the gate weights.
//   softmax (V2): s = softmax(logits); g = s of the chosen (renormalized if norm_topk_prob)
//   sigmoid (V3): s = sigmoid(logits); g = chosen s / their sum
// then g *= routed_scaling_factor. With n_group > 1 a group's score is the sum of its two best
// (biased) scores, and only the topk_group best groups are eligible.
Routing route(const torch::Tensor& logits, const torch::Tensor& bias, const config::MoeConfig& c);

// Tokens per expert, [E] int64 (bincount of topk_ids).
torch::Tensor expert_counts(const torch::Tensor& topk_ids, int64_t experts);

// Scores normalized to sum 1 over experts per token (softmax scores already are).
torch::Tensor normalized_scores(const Routing& r, const config::MoeConfig& c);

// Expert-level balance loss (V2): alpha * sum_i f_i P_i, f_i = E/(K T) * #slots choosing i,
// P_i = mean over the T tokens of the normalized score of i.
torch::Tensor expert_balance_loss(const Routing& r, const config::MoeConfig& c, double alpha);

// Sequence-wise balance loss (V3): the same per sequence (B sequences of S tokens), then averaged.
torch::Tensor sequence_balance_loss(const Routing& r, const config::MoeConfig& c, int64_t sequences, double alpha);

// MaxVio = (max_i load_i - mean load) / mean load; 0 when nothing was routed.
double max_violation(const torch::Tensor& load);

}  // namespace ts::nn
