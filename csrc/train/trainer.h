// Pretraining (kind: pretrain): the language-modelling objective on the one training loop
// (loop.h): next-token cross-entropy of the transformer on the config's data, plus the MoE
// balance losses; the loss-free bias updates after each optimizer step; validation loss and MoE
// load statistics every train.eval_every steps.
#pragma once

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "csrc/config/config.h"
#include "csrc/nn/transformer.h"
#include "csrc/run/outcome.h"
#include "csrc/train/data.h"
#include "csrc/train/loop.h"

namespace ts::parallel {
class Dist;
struct Group;
class GradSync;
}  // namespace ts::parallel

namespace ts::train {

// Under a multi-rank launch (tinyseek launch, torchrun) the objective is data-parallel: each rank
// trains on train.batch_size / W sequences of every step's batch and the gradients are averaged
// over the ranks (csrc/parallel/data_parallel.h), so losses and weights match one process on the
// whole batch within fp32 reduction order. parallel.expert: N splits the routed experts over
// groups of N consecutive ranks (csrc/parallel/expert_parallel.h); expert gradients are averaged
// over the replicas holding the same experts, and the loss-free bias follows the load summed over
// all ranks. Rank 0 writes the run folder; checkpoints are sharded (checkpoint.h ShardLayout) and
// load into any rank count. The expert-level balance loss (moe.aux_loss_alpha) and the MoE load
// statistics in metrics.jsonl are each rank's share of the batch; the sequence-wise loss is exact.
class LanguageModelObjective : public Objective {
 public:
  // Picks the device, loads the data, builds the model (seeded by cfg.seed). Throws
  // config::ConfigError when the data does not fit the model (a token id >= vocab_size).
  LanguageModelObjective(const config::Config& cfg, const std::string& variant);
  ~LanguageModelObjective() override;

  torch::nn::Module& module() override { return *model_; }
  std::vector<torch::Tensor> trainable() override { return model_->parameters(); }
  StepResult step(int64_t step, bool inject_nan) override;
  double grad_norm() override;
  void after_optimizer_step() override;
  std::optional<StepResult> evaluate() override;
  int64_t tokens_per_step() const override { return cfg_.train.batch_size * cfg_.data.seq_len; }
  std::string describe() const override;
  nlohmann::json summary() override;

  bool lead() const override { return rank_ == 0; }
  bool any(bool local) override;
  std::pair<int64_t, int64_t> min_max(int64_t v) override;
  void barrier() override;
  void save_checkpoint(const std::filesystem::path& root, int64_t step, torch::optim::AdamW& opt,
                       const nlohmann::json& state) override;
  std::optional<CheckpointInfo> load_checkpoint(const std::filesystem::path& root, torch::optim::AdamW& opt) override;

  nn::Transformer& model() { return model_; }
  const TokenData& data() const { return data_; }
  const torch::Device& device() const { return device_; }

 private:
  // Main and MTP logits, under bf16 autocast when configured.
  nn::ModelOutputs forward(const torch::Tensor& inputs);
  void setup_parallel();
  // This rank's rows of a global batch (all of them on one process).
  torch::Tensor my_rows(const torch::Tensor& batch) const;
  // Sums `values` over the ranks and divides by their count (unchanged on one process).
  std::vector<double> mean_over_ranks(std::vector<double> values);
  ShardLayout shard_layout() const;
  int64_t parameters() const;  // the model's, all experts counted

  config::Config cfg_;
  std::string label_;
  torch::Device device_;
  bool autocast_;
  TokenData data_;
  nn::Transformer model_{nullptr};
  nlohmann::json last_eval_moe_ = nlohmann::json::object();
  nlohmann::json last_eval_mtp_ = nlohmann::json::object();

  // Several ranks (null / 1 on one process).
  std::shared_ptr<parallel::Dist> dist_;
  int world_ = 1, rank_ = 0;
  int64_t ep_ = 1;                             // expert-parallel group size
  const parallel::Group* ep_group_ = nullptr;  // this rank's expert-parallel group (ep_ > 1)
  std::unique_ptr<parallel::GradSync> sync_;
  std::vector<std::string> expert_names_;  // the routed experts' weights (split over ep_group_)
  std::set<const void*> expert_params_;
  double sync_wait_s_ = 0;
  int64_t sync_steps_ = 0, sync_overlapped_ = 0;
};

// The checks of kind pretrain that need no data, for a job of `world` ranks: parallel.data and
// parallel.expert against it, the batch split, bf16 only on CUDA. Throws config::InvalidKeys.
void check_pretrain_config(const config::Config& cfg, int world = 1);

// The pretrain driver: trains one variant into run_dir (resume: from its latest checkpoint).
run::RunOutcome train_variant(const config::Config& cfg, const std::string& variant,
                              const std::filesystem::path& run_dir, bool resume);

}  // namespace ts::train
