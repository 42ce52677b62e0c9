// The one training loop. Every kind of training (pretraining, pipeline stages, GRPO) is an
// Objective, the loss of a step and what follows the optimizer step; the loop owns everything
// else, once: the run folder (config.resolved.yaml, metrics.jsonl, summary.json), AdamW with the
// learning-rate schedule and global-norm clipping, periodic evaluation, atomic checkpoints and
// bit-exact resume, non-finite loss and gradient handling, train.stop_at, and Ctrl-C.
//
// Several processes (a pipeline job) run the loop together: every rank calls it with its own
// objective; the objective combines what must agree (grad norm, the stop decision); only the
// lead rank writes the run folder and prints; each rank checkpoints its own shard.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "csrc/config/config.h"
#include "csrc/run/outcome.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/checkpoint.h"

namespace ts::train {

struct StepResult {
  double loss = 0;                                    // logged as "loss"; non-finite stops or skips
  nlohmann::json metrics = nlohmann::json::object();  // more fields of the step's metrics line
  std::string note;  // a few words for the progress line ("reward 0.41 acc 0.30"), may be empty
};

class Objective {
 public:
  virtual ~Objective() = default;

  // What checkpoints hold (parameters and buffers) and what the optimizer trains.
  virtual torch::nn::Module& module() = 0;
  virtual std::vector<torch::Tensor> trainable() = 0;

  // Forward and backward of step `step`'s batch (0-based; batches depend only on the step, so a
  // resumed run sees the same ones): gradients in .grad of trainable(). inject_nan (fault
  // injection, train.debug_nan_step) makes the loss NaN. A non-finite loss has no backward.
  virtual StepResult step(int64_t step, bool inject_nan) = 0;
  // The global gradient norm of the step (several processes combine their shares).
  virtual double grad_norm();
  // After each optimizer step (the MoE loss-free bias updates, say).
  virtual void after_optimizer_step() {}
  // Validation loss and more fields; nullopt when the objective has none. A NaN loss means an
  // evaluation without a loss (held-out accuracy, say): only its metrics and note are logged.
  virtual std::optional<StepResult> evaluate() { return std::nullopt; }
  // Whether to evaluate once before the first step (the starting point of a fine-tuning run).
  virtual bool evaluate_at_start() const { return false; }

  // Tokens the last step trained on (for tokens/s; asked after every step, so it may vary) and
  // the run's first progress line.
  virtual int64_t tokens_per_step() const = 0;
  virtual std::string describe() const = 0;
  // Fields of summary.json beyond the loop's (they may replace the loop's).
  virtual nlohmann::json summary() { return nlohmann::json::object(); }

  // Multi-process objectives: whether this process writes the run folder, the sub-folder of
  // checkpoints/ its state goes to ("" for one process), and the agreement of all processes.
  virtual bool lead() const { return true; }
  virtual std::string checkpoint_shard() const { return ""; }
  virtual bool any(bool local) { return local; }                             // logical or over ranks
  virtual std::pair<int64_t, int64_t> min_max(int64_t v) { return {v, v}; }  // over ranks
  virtual void barrier() {}                                                  // every rank arrives
  // Checkpoints of module() and the optimizer under root (checkpoint.h); data-parallel
  // objectives write and read them sharded across their ranks.
  virtual void save_checkpoint(const std::filesystem::path& root, int64_t step, torch::optim::AdamW& opt,
                               const nlohmann::json& state) {
    train::save_checkpoint(root, step, module(), opt, state);
  }
  virtual std::optional<CheckpointInfo> load_checkpoint(const std::filesystem::path& root, torch::optim::AdamW& opt) {
    return load_latest_checkpoint(root, module(), opt);
  }
};

// Trains `objective` for cfg.train.steps steps into folder (resume: from its latest checkpoint).
run::RunOutcome train_loop(Objective& objective, const config::Config& cfg, const std::string& variant,
                           const run::RunFolder& folder, bool resume);

}  // namespace ts::train
