// GRPO (kind: grpo): group-relative policy optimization with rule rewards and no value model
// (DeepSeekMath §4, DeepSeek-R1-Zero), as an Objective of the one training loop (train/loop.h).
//
// Every num_iterations loop steps form one rollout batch: P = grpo.prompts_per_step train
// problems of the task, G = grpo.group_size completions each from the KV-cached sampler
// (nn/generate.h), rule rewards (rl/tasks.h), group-relative advantages, and, when needed, the
// old policy's and the frozen reference's log-probabilities. Each loop step is then one
// optimizer step on torch.ops.tinyseek.grpo_loss over that batch.
//
// Determinism: batch b's problems are the task's train problems b*P .. b*P + P-1 and sequence i
// samples with seed (seed, b, i), so a run depends on its config only. The checkpoint holds the
// policy ("policy.*"), the reference ("reference.*", when beta > 0) and the current rollout batch
// ("rollout_*"), so a resume inside a batch continues bit for bit.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "csrc/config/config.h"
#include "csrc/nn/transformer.h"
#include "csrc/rl/tasks.h"
#include "csrc/run/outcome.h"
#include "csrc/train/loop.h"
#include "csrc/train/trained_run.h"

namespace ts::rl {

// The checks of kind grpo that need no files: init_from given, the task valid, prompts and
// completions within the model's context, a byte-level vocabulary. Throws config::InvalidKeys.
void check_grpo_config(const config::Config& cfg);

// The longest prompt the task's RL and held-out problems can have, in bytes.
int64_t max_prompt_length(const config::TaskConfig& task);

// Everything a GRPO checkpoint holds.
struct GrpoStateImpl : torch::nn::Module {
  GrpoStateImpl(nn::Transformer policy, nn::Transformer reference, int64_t sequences, int64_t length);
  nn::Transformer policy{nullptr}, reference{nullptr};         // reference is null when beta == 0
  torch::Tensor tokens, mask, old_logp, ref_logp, advantages;  // [N, T], [N, T-1] x3, [N]
  torch::Tensor info;        // int64 [2]: the batch these hold (-1: none yet), the tokens used per row
  torch::Tensor start_eval;  // float64 [4]: the evaluation before the first step (NaN until then)
};
TORCH_MODULE(GrpoState);

class GrpoObjective : public train::Objective {
 public:
  // cfg: the variant's config with the model section of the run it starts from (init), whose
  // checkpoint gives the policy's and the reference's first weights.
  GrpoObjective(const config::Config& cfg, const std::string& variant, const train::TrainedRun& init);
  // The same from a policy in memory (its config is cfg.model); init_desc names where it came
  // from. The reference, when beta > 0, starts as a copy of it. (Benchmarks, tests.)
  GrpoObjective(const config::Config& cfg, const std::string& variant, nn::Transformer policy, std::string init_desc);

  torch::nn::Module& module() override { return *state_; }
  std::vector<torch::Tensor> trainable() override { return state_->policy->parameters(); }
  train::StepResult step(int64_t step, bool inject_nan) override;
  void after_optimizer_step() override { state_->policy->after_optimizer_step(); }
  std::optional<train::StepResult> evaluate() override;
  bool evaluate_at_start() const override { return true; }
  int64_t tokens_per_step() const override { return last_tokens_; }
  std::string describe() const override;
  nlohmann::json summary() override;
  // metrics.jsonl of the run, read by summary() for the training curves' first and last 10%.
  void set_metrics_path(std::filesystem::path p) { metrics_path_ = std::move(p); }

 private:
  void sample(int64_t batch, nlohmann::json& metrics);
  // Per-token log-probabilities [N, length-1] of the stored rollout tokens under `model`
  // (entropy: the masked mean entropy of its distributions, when not null).
  torch::Tensor token_logp(nn::Transformer& model, int64_t length, double* entropy);

  config::Config cfg_;
  std::string label_, init_desc_;
  torch::Device device_;
  Task task_;
  GrpoState state_{nullptr};
  int64_t last_tokens_ = 0;  // completion tokens of the last step
  std::string last_note_;    // the progress note of the current rollout batch
  nlohmann::json last_eval_ = nlohmann::json::object();
  std::filesystem::path metrics_path_;
};

// The grpo driver: resolves grpo.init_from (a run folder, or a variant of this run's folder),
// takes its model config and weights, and trains into run_dir. Throws config::ConfigError
// (exit 2) when init_from names no trained run.
run::RunOutcome train_grpo(const config::Config& cfg, const std::string& variant, const std::filesystem::path& run_dir,
                           bool resume);

}  // namespace ts::rl
