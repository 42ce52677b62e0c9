// The GRPO loss (DeepSeekMath §4) with TRL's loss types, and group-relative advantages, as ops:
// torch.ops.tinyseek.grpo_loss and torch.ops.tinyseek.group_advantages. Both are compositions of
// ATen ops registered as CompositeImplicitAutograd: the work is a few elementwise passes over
// [N, L] log-probabilities, small beside the model forward that produced them, so one
// implementation serves every device, autograd derives the backward and Meta shapes follow.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

namespace ts::ops {

// logp, old_logp [N, L] per-token log-probabilities (policy, and the policy that sampled),
// advantages [N], mask [N, L] (nonzero on completion tokens), ref_logp [N, L] (required when
// beta > 0). Per token (or per sequence with importance_sampling "sequence", GSPO) the ratio
// c1 = exp(logp - old); c2 = clamp(c1, 1 - epsilon, 1 + epsilon_high (default epsilon)); loss
// -min(c1 A, c2 A) (clip false: -c1 A), plus beta * k3 KL, exp(ref - logp) - (ref - logp) - 1.
// Reduction by loss_type: grpo (mean over each sequence's tokens, then over sequences), bnpo and
// dapo (sum over tokens / number of tokens), dr_grpo (sum / (N * max_completion_length, default L)).
// Returns the loss and stats [5] (no gradient): clip ratio low, high and region (token shares where
// the clip is active: ratio below 1 - epsilon with A < 0, above 1 + epsilon_high with A > 0),
// mean KL, mean ratio, each over completion tokens.
std::tuple<at::Tensor, at::Tensor> grpo_loss(const at::Tensor& logp, const at::Tensor& old_logp,
                                             const at::Tensor& advantages, const at::Tensor& mask,
                                             const std::optional<at::Tensor>& ref_logp, double beta, double epsilon,
                                             std::optional<double> epsilon_high, const std::string& loss_type,
                                             const std::string& importance_sampling,
                                             std::optional<int64_t> max_completion_length, bool clip);

// rewards [P, G] (G samples of each of P prompts) -> advantages [P, G]: r - group mean, divided by
// the group's std + 1e-4 (scale "group"), the whole batch's std + 1e-4 ("batch"), or not ("none",
// Dr. GRPO). Std with Bessel's correction, as torch.std; G >= 2. Equal rewards give 0.
at::Tensor group_advantages(const at::Tensor& rewards, const std::string& scale);

inline constexpr int kGrpoStats = 5;  // the length of grpo_loss's stats

}  // namespace ts::ops
