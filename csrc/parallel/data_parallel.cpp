#include "csrc/parallel/data_parallel.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace ts::parallel {

GradSync::GradSync(Dist& dist, std::vector<SyncedParam> params, double scale, GradSyncOptions options)
    : dist_(dist), params_(std::move(params)), scale_(scale), options_(options) {
  bucket_of_.assign(params_.size(), 0);
  slot_of_.assign(params_.size(), 0);
  seen_.assign(params_.size(), 0);
  // Reverse registration order, a new bucket when the group, dtype or device changes or the
  // current one is full.
  for (size_t n = params_.size(); n-- > 0;) {
    const auto& p = params_[n];
    TORCH_CHECK(p.param.defined() && p.param.requires_grad(), "GradSync: parameter ", n, " does not require grad");
    const int64_t bytes = p.param.numel() * p.param.element_size();
    Bucket* b = buckets_.empty() ? nullptr : &buckets_.back();
    const bool fits = b && b->group == p.group &&
                      params_[b->params.front()].param.scalar_type() == p.param.scalar_type() &&
                      params_[b->params.front()].param.device() == p.param.device() &&
                      (b->offsets.back() + params_[b->params.back()].param.numel()) * p.param.element_size() + bytes <=
                          options_.bucket_bytes;
    if (!fits) {
      buckets_.emplace_back();
      b = &buckets_.back();
      b->group = p.group;
      b->offsets.push_back(0);
    } else {
      b->offsets.push_back(b->offsets.back() + params_[b->params.back()].param.numel());
    }
    bucket_of_[n] = buckets_.size() - 1;
    slot_of_[n] = b->params.size();
    b->params.push_back(n);
  }
  for (auto& b : buckets_) {
    const auto& last = params_[b.params.back()].param;
    b.flat = torch::zeros({b.offsets.back() + last.numel()}, last.options().requires_grad(false));
  }
  for (size_t n = 0; n < params_.size(); ++n)
    params_[n].param.register_hook([this, n](torch::Tensor grad) { on_grad(n, grad); });
  stats_.buckets = static_cast<int64_t>(buckets_.size());
}

void GradSync::begin() {
  TORCH_CHECK(!armed_, "GradSync::begin: the previous backward was not finished");
  for (auto& b : buckets_) {
    b.arrived = 0;
    b.launched = false;
    b.work.reset();
  }
  std::fill(seen_.begin(), seen_.end(), 0);
  next_launch_ = 0;
  stats_.launched_in_backward = 0;
  stats_.wait_s = 0;
  armed_ = true;
}

void GradSync::on_grad(size_t n, const torch::Tensor& grad) {
  if (!armed_) return;
  auto& b = buckets_[bucket_of_[n]];
  if (b.launched)
    throw std::logic_error(fmt::format(
        "GradSync: a second gradient of parameter {} arrived after its bucket was reduced (a parameter used in two "
        "backward passes of one step)",
        n));
  const auto& p = params_[n].param;
  torch::NoGradGuard ng;
  auto slot = b.flat.narrow(0, b.offsets[slot_of_[n]], p.numel());
  // A leaf is normally reached once per backward (the engine sums its gradients before its
  // accumulator runs); a second arrival adds to the first and is not counted again.
  if (seen_[n]) {
    slot.add_(grad.detach().reshape({-1}));
    return;
  }
  slot.copy_(grad.detach().reshape({-1}));
  seen_[n] = 1;
  if (++b.arrived == b.params.size() && options_.overlap) launch_ready_in_order();
}

void GradSync::launch(Bucket& b) {
  b.launched = true;
  if (b.group && b.group->size == 1) return;  // nothing to reduce with
  std::vector<at::Tensor> t{b.flat};
  b.work = dist_.iall_reduce(t, c10d::ReduceOp::SUM, b.group);
}

void GradSync::launch_ready_in_order() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].arrived >= buckets_[next_launch_].params.size()) {
    launch(buckets_[next_launch_++]);
    ++stats_.launched_in_backward;
  }
}

void GradSync::finish() {
  TORCH_CHECK(armed_, "GradSync::finish: begin() was not called");
  armed_ = false;
  {
    torch::NoGradGuard ng;  // parameters the backward did not reach count zero
    for (size_t n = 0; n < params_.size(); ++n)
      if (!seen_[n])
        buckets_[bucket_of_[n]]
            .flat.narrow(0, buckets_[bucket_of_[n]].offsets[slot_of_[n]], params_[n].param.numel())
            .zero_();
  }
  for (; next_launch_ < buckets_.size(); ++next_launch_) launch(buckets_[next_launch_]);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& b : buckets_)
    if (b.work) dist_.wait(b.work, "the gradient all-reduce");
  stats_.wait_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  torch::NoGradGuard ng;
  for (auto& b : buckets_) {
    b.flat.mul_(scale_);
    for (size_t s = 0; s < b.params.size(); ++s) {
      auto& p = params_[b.params[s]].param;
      auto mean = b.flat.narrow(0, b.offsets[s], p.numel()).view(p.sizes());
      auto& g = p.mutable_grad();
      if (!g.defined())
        g = mean.clone();
      else
        g.copy_(mean);
    }
    b.work.reset();
  }
}

void reduce_gradients(Dist& dist, const std::vector<torch::Tensor>& params, const Group* g, double scale) {
  if (params.empty()) return;
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> parts;
  for (const auto& p : params)
    parts.push_back(p.grad().defined() ? p.grad().flatten() : torch::zeros({p.numel()}, p.options()));
  std::vector<at::Tensor> flat{torch::cat(parts)};
  dist.all_reduce(flat, c10d::ReduceOp::SUM, g);
  if (scale != 1.0) flat[0].mul_(scale);
  int64_t at = 0;
  for (auto p : params) {
    auto mean = flat[0].narrow(0, at, p.numel()).view(p.sizes());
    auto& grad = p.mutable_grad();
    if (!grad.defined())
      grad = mean.clone();
    else
      grad.copy_(mean);
    at += p.numel();
  }
}

}  // namespace ts::parallel
