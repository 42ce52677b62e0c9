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

// One AdamW update of every parameter of `opt` that has a gradient, with the gradients first
// multiplied by grad_scale (the clipping factor; 1 = none). The same update as opt.step()
// (LibTorch's AdamW: decoupled weight decay, bias-corrected moments, no amsgrad) through
// torch's fused AdamW kernel: one pass over each parameter instead of about ten element-wise
// ops with their temporaries. The state lives in opt as opt.step() keeps it, so checkpoints and
// resume are unchanged.
void adamw_step(torch::optim::AdamW& opt, double grad_scale = 1.0);

// Squared L2 norm of the gradients of `params` (undefined gradients count 0), in float64.
double grad_sq_norm(const std::vector<torch::Tensor>& params);
// The factor clipping by the global norm applies: max_norm / (norm + 1e-6) when norm > max_norm > 0, else 1.
double clip_factor(double norm, double max_norm);
// Scales every gradient by clip_factor(norm, max_norm).
void clip_gradients(const std::vector<torch::Tensor>& params, double norm, double max_norm);

}  // namespace ts::train
