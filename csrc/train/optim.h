// The optimizer set-up every training loop uses (train.*): AdamW in two groups, the learning-rate
// schedule, and clipping by the global gradient norm.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "csrc/config/config.h"

namespace ts::train {

// AdamW (betas, eps from train.*): weight decay train.weight_decay on matrices (dim >= 2), none on
// vectors (norm weights, biases).
std::unique_ptr<torch::optim::AdamW> make_adamw(const std::vector<torch::Tensor>& params, const config::TrainConfig& t);

// Learning rate at `step` (0-based): linear warmup to lr, then cosine to lr * min_lr_ratio.
double lr_at(const config::TrainConfig& t, int64_t step);
void set_lr(torch::optim::Optimizer& opt, double lr);

// Squared L2 norm of the gradients of `params` (undefined gradients count 0), in float64.
double grad_sq_norm(const std::vector<torch::Tensor>& params);
// Scales every gradient by max_norm / (norm + 1e-6) when norm > max_norm > 0.
void clip_gradients(const std::vector<torch::Tensor>& params, double norm, double max_norm);

}  // namespace ts::train
