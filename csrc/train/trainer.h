// Pretraining (kind: pretrain): the language-modelling objective on the one training loop
// (loop.h): next-token cross-entropy of the transformer on the config's data, plus the MoE
// balance losses; the loss-free bias updates after each optimizer step; validation loss and MoE
// load statistics every train.eval_every steps.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "csrc/config/config.h"
#include "csrc/nn/transformer.h"
#include "csrc/run/outcome.h"
#include "csrc/train/data.h"
#include "csrc/train/loop.h"

namespace ts::train {

class LanguageModelObjective : public Objective {
 public:
  // Picks the device, loads the data, builds the model (seeded by cfg.seed). Throws
  // config::ConfigError when the data does not fit the model (a token id >= vocab_size).
  LanguageModelObjective(const config::Config& cfg, const std::string& variant);

  torch::nn::Module& module() override { return *model_; }
  std::vector<torch::Tensor> trainable() override { return model_->parameters(); }
  StepResult step(int64_t step, bool inject_nan) override;
  void after_optimizer_step() override { model_->after_optimizer_step(); }
  std::optional<StepResult> evaluate() override;
  int64_t tokens_per_step() const override { return cfg_.train.batch_size * cfg_.data.seq_len; }
  std::string describe() const override;
  nlohmann::json summary() override;

  nn::Transformer& model() { return model_; }
  const TokenData& data() const { return data_; }
  const torch::Device& device() const { return device_; }

 private:
  // Main and MTP logits, under bf16 autocast when configured.
  nn::ModelOutputs forward(const torch::Tensor& inputs);

  config::Config cfg_;
  std::string label_;
  torch::Device device_;
  bool autocast_;
  TokenData data_;
  nn::Transformer model_{nullptr};
  nlohmann::json last_eval_moe_ = nlohmann::json::object();
  nlohmann::json last_eval_mtp_ = nlohmann::json::object();
};

// The checks of kind pretrain that need no data: one process (no expert parallelism), bf16 only
// on CUDA. Throws config::InvalidKeys.
void check_pretrain_config(const config::Config& cfg);

// The pretrain driver: trains one variant into run_dir (resume: from its latest checkpoint).
run::RunOutcome train_variant(const config::Config& cfg, const std::string& variant,
                              const std::filesystem::path& run_dir, bool resume);

}  // namespace ts::train
