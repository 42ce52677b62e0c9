#include "csrc/train/optim.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

namespace ts::train {

std::unique_ptr<torch::optim::AdamW> make_adamw(const std::vector<torch::Tensor>& params,
                                                const config::TrainConfig& t) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : params) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  auto opts = torch::optim::AdamWOptions(t.lr).betas({t.beta1, t.beta2}).eps(t.adam_eps);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(opts).weight_decay(t.weight_decay)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(0)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), opts);
}

double lr_at(const config::TrainConfig& t, int64_t step) {
  if (step < t.warmup_steps) return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  const double span = std::max<int64_t>(1, t.steps - t.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - t.warmup_steps) / span);
  const double min_lr = t.lr * t.min_lr_ratio;
  return min_lr + 0.5 * (t.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

double grad_sq_norm(const std::vector<torch::Tensor>& params) {
  // One fused norm per gradient (torch's _foreach_norm: a single read, no temporaries), squared
  // and summed in float64.
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return 0;
  torch::NoGradGuard ng;
  auto norms = at::_foreach_norm(grads, 2, torch::kFloat);
  return torch::stack(norms).to(torch::kDouble).square().sum().item<double>();
}

double clip_factor(double norm, double max_norm) {
  return max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
}

void clip_gradients(const std::vector<torch::Tensor>& params, double norm, double max_norm) {
  const double f = clip_factor(norm, max_norm);
  if (f == 1.0) return;
  torch::NoGradGuard ng;
  for (const auto& p : params)
    if (p.grad().defined()) p.grad().mul_(f);
}

void adamw_step(torch::optim::AdamW& opt, double grad_scale) {
  torch::NoGradGuard ng;
  // The fused kernel takes lists of one device and dtype, and only reads each parameter's step:
  // parameters at the same step share one scalar tensor (usually one per bucket).
  struct Bucket {
    c10::Device device;
    at::ScalarType dtype;
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
    std::map<int64_t, at::Tensor> step_tensors;
  };
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    TORCH_CHECK(!o.amsgrad(), "adamw_step: amsgrad is not supported");
    std::vector<Bucket> buckets;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = opt.state()[p.unsafeGetTensorImpl()];
      if (!slot) {  // created as opt.step() creates it
        auto st = std::make_unique<torch::optim::AdamWParamState>();
        st->step(0);
        st->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        st->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(st);
      }
      auto& st = static_cast<torch::optim::AdamWParamState&>(*slot);
      st.step(st.step() + 1);
      auto b = std::find_if(buckets.begin(), buckets.end(),
                            [&](const Bucket& x) { return x.device == p.device() && x.dtype == p.scalar_type(); });
      if (b == buckets.end()) b = buckets.insert(buckets.end(), Bucket{p.device(), p.scalar_type()});
      auto& step = b->step_tensors[st.step()];
      if (!step.defined())
        step = torch::full({}, static_cast<double>(st.step()), torch::TensorOptions().device(p.device()));
      b->params.push_back(p);
      b->grads.push_back(p.grad());
      b->exp_avgs.push_back(st.exp_avg());
      b->exp_avg_sqs.push_back(st.exp_avg_sq());
      b->steps.push_back(step);
    }
    for (auto& b : buckets) {
      std::optional<at::Tensor> scale;  // the kernel divides the gradients by it (and stores them so)
      if (grad_scale != 1.0) scale = torch::full({}, 1.0 / grad_scale, torch::TensorOptions().device(b.device));
      at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, {}, b.steps, o.lr(), std::get<0>(o.betas()),
                        std::get<1>(o.betas()), o.weight_decay(), o.eps(), /*amsgrad=*/false, /*maximize=*/false, scale,
                        std::nullopt);
    }
  }
}

}  // namespace ts::train
