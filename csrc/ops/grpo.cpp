#include "csrc/ops/grpo.h"

#include <torch/library.h>

#include "csrc/util/check.h"

namespace ts::ops {

namespace {
constexpr const char* kLossOp = "grpo_loss";
constexpr const char* kAdvOp = "group_advantages";
}  // namespace

std::tuple<at::Tensor, at::Tensor> grpo_loss(const at::Tensor& logp, const at::Tensor& old_logp,
                                             const at::Tensor& advantages, const at::Tensor& mask,
                                             const std::optional<at::Tensor>& ref_logp, double beta, double epsilon,
                                             std::optional<double> epsilon_high, const std::string& loss_type,
                                             const std::string& importance_sampling,
                                             std::optional<int64_t> max_completion_length, bool clip) {
  TS_CHECK_DIM(kLossOp, logp, 2);
  TS_CHECK_ARG(kLossOp, logp, at::isFloatingType(logp.scalar_type()), "expected a floating dtype, got ",
               logp.scalar_type());
  const int64_t N = logp.size(0), L = logp.size(1);
  TS_CHECK_ARG(kLossOp, old_logp, old_logp.sizes() == logp.sizes(), "expected the shape of 'logp' ",
               ::ts::shape_str(logp), ", got ", ::ts::shape_str(old_logp));
  TS_CHECK_ARG(kLossOp, mask, mask.sizes() == logp.sizes(), "expected the shape of 'logp' ", ::ts::shape_str(logp),
               ", got ", ::ts::shape_str(mask));
  TS_CHECK_DIM(kLossOp, advantages, 1);
  TS_CHECK_SIZE(kLossOp, advantages, 0, N);
  for (const at::Tensor* t : {&old_logp, &advantages, &mask}) TS_CHECK_SAME_DEVICE(kLossOp, (*t), logp);
  TS_CHECK_ARG(kLossOp, epsilon, epsilon >= 0, "expected >= 0, got ", epsilon);
  const double eps_high = epsilon_high.value_or(epsilon);
  TS_CHECK_ARG(kLossOp, epsilon_high, eps_high >= 0, "expected >= 0, got ", eps_high);
  TS_CHECK_ARG(kLossOp, beta, beta >= 0, "expected >= 0, got ", beta);
  TS_CHECK_ARG(kLossOp, loss_type,
               loss_type == "grpo" || loss_type == "bnpo" || loss_type == "dapo" || loss_type == "dr_grpo",
               "expected one of grpo, bnpo, dapo, dr_grpo, got '", loss_type, "'");
  TS_CHECK_ARG(kLossOp, importance_sampling, importance_sampling == "token" || importance_sampling == "sequence",
               "expected 'token' or 'sequence', got '", importance_sampling, "'");
  if (beta > 0) {
    TS_CHECK_ARG(kLossOp, ref_logp, ref_logp.has_value() && ref_logp->defined(),
                 "required when beta > 0 (the KL term needs the reference's log-probabilities)");
    TS_CHECK_ARG(kLossOp, ref_logp, ref_logp->sizes() == logp.sizes(), "expected the shape of 'logp' ",
                 ::ts::shape_str(logp), ", got ", ::ts::shape_str(*ref_logp));
    TS_CHECK_SAME_DEVICE(kLossOp, (*ref_logp), logp);
  }
  const int64_t max_len = max_completion_length.value_or(L);
  TS_CHECK_ARG(kLossOp, max_completion_length, max_len >= 1, "expected >= 1, got ", max_len);

  const auto dtype = logp.scalar_type();
  const at::Tensor m = mask.to(dtype);
  const at::Tensor old = old_logp.to(dtype);
  const at::Tensor A = advantages.to(dtype).unsqueeze(1);  // [N, 1]
  at::Tensor log_ratio = logp - old;
  if (importance_sampling == "sequence")  // GSPO: one ratio per sequence, the mean per-token log-ratio
    log_ratio = ((log_ratio * m).sum(1, true) / m.sum(1, true).clamp_min(1.0));
  const at::Tensor c1 = at::exp(log_ratio);  // [N, L] or [N, 1]
  at::Tensor per_token;
  if (clip) {
    const at::Tensor c2 = at::clamp(c1, 1.0 - epsilon, 1.0 + eps_high);
    per_token = -at::minimum(c1 * A, c2 * A);
  } else {
    per_token = -(c1 * A);
  }
  if (per_token.size(1) != L) per_token = per_token.expand({N, L});
  at::Tensor kl;
  if (beta > 0) {
    const at::Tensor d = ref_logp->to(dtype) - logp;
    kl = at::exp(d) - d - 1.0;
    per_token = per_token + beta * kl;
  }
  at::Tensor loss;
  if (loss_type == "grpo") {
    loss = ((per_token * m).sum(1) / m.sum(1).clamp_min(1.0)).mean();
  } else if (loss_type == "dr_grpo") {
    loss = (per_token * m).sum() / static_cast<double>(N * max_len);
  } else {  // bnpo, dapo: one process, so the local and the global token counts agree
    loss = (per_token * m).sum() / m.sum().clamp_min(1.0);
  }

  // Stats, without gradients.
  at::NoGradGuard ng;
  const at::Tensor md = m.detach();
  const at::Tensor tokens = md.sum().clamp_min(1.0);
  auto masked_mean = [&](const at::Tensor& x) { return (x.to(dtype).expand({N, L}) * md).sum() / tokens; };
  const at::Tensor r = c1.detach();
  const at::Tensor Ad = A.detach();
  const at::Tensor low = masked_mean(at::logical_and(r < 1.0 - epsilon, Ad < 0));
  const at::Tensor high = masked_mean(at::logical_and(r > 1.0 + eps_high, Ad > 0));
  const at::Tensor region = clip ? low + high : at::zeros_like(low);
  const at::Tensor mean_kl = beta > 0 ? masked_mean(kl.detach()) : at::zeros_like(low);
  at::Tensor stats =
      at::stack({clip ? low : at::zeros_like(low), clip ? high : at::zeros_like(low), region, mean_kl, masked_mean(r)})
          .to(at::kFloat);
  return {loss, stats};
}

at::Tensor group_advantages(const at::Tensor& rewards, const std::string& scale) {
  TS_CHECK_DIM(kAdvOp, rewards, 2);
  TS_CHECK_ARG(kAdvOp, rewards, at::isFloatingType(rewards.scalar_type()), "expected a floating dtype, got ",
               rewards.scalar_type());
  TS_CHECK_ARG(kAdvOp, rewards, rewards.size(1) >= 2,
               "expected at least 2 samples per prompt (dim 1) for a group standard deviation, got shape ",
               ::ts::shape_str(rewards));
  TS_CHECK_ARG(kAdvOp, scale, scale == "group" || scale == "batch" || scale == "none",
               "expected 'group', 'batch' or 'none', got '", scale, "'");
  const at::Tensor centred = rewards - rewards.mean(1, true);
  if (scale == "none") return centred;
  const at::Tensor std = scale == "group" ? rewards.std({1}, /*unbiased=*/true, /*keepdim=*/true) : rewards.std();
  return centred / (std + 1e-4);
}

}  // namespace ts::ops

TORCH_LIBRARY_IMPL(tinyseek, CompositeImplicitAutograd, m) {
  m.impl("grpo_loss", &ts::ops::grpo_loss);
  m.impl("group_advantages", &ts::ops::group_advantages);
}
