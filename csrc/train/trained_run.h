// RUN_DIR[/VARIANT] [--step N]: a trained run's checkpoint, the way the commands and kinds that read
// one name it (tinyseek generate, tinyseek export, grpo.init_from, train.init_from, tinyseek.load);
// hf:DIR names a Hugging Face checkpoint folder instead (csrc/train/hf.h).
#pragma once

#include <filesystem>
#include <string>

#include "csrc/config/config.h"
#include "csrc/nn/transformer.h"

namespace ts::train {

struct RunRef {
  std::string dir;    // runs/<name>/<variant>, or runs/<name> when it has one variant
  int64_t step = -1;  // checkpoint step; < 0: the latest
};

struct TrainedRun {
  std::filesystem::path dir;  // the variant folder
  std::string config_path;    // its config.resolved.yaml
  config::Config config;
  int64_t step = 0;
  std::filesystem::path step_dir;  // the checkpoint folder of that step
  // The prefix of the model's tensors in the checkpoint: "" when the run saved the model itself,
  // "policy." for a GRPO run (whose checkpoint also holds the reference and the rollout batch).
  std::string weights_prefix;
  bool hf = false;  // hf:DIR: dir is the transformers folder, config derived from its config.json
};

// Finds the variant folder, parses its resolved config and picks the checkpoint. Throws
// config::ConfigError (exit 2) naming what is missing: the folder, a variant among several, the
// checkpoint, the step (with the steps there are).
TrainedRun resolve_run(const RunRef& ref);

// The run's model (its config's model section) with the weights of the chosen checkpoint, on CPU.
nn::Transformer load_model(const TrainedRun& run);

// Copies the weights of `from` (RUN_DIR[/VARIANT] or hf:DIR, its latest checkpoint) into `model`,
// built from config c, after checking that c's model is the one stored there (differing keys
// named). MTP modules the checkpoint lacks keep their initialisation. `key` names the config key
// in errors. Throws config::ConfigError (exit 2).
void init_weights_from(const std::string& from, const config::Config& c, nn::TransformerImpl& model,
                       const std::string& key);
// The same checks without loading the weights (a config check before anything is written).
void check_init_from(const std::string& from, const config::Config& c, const std::string& key);

}  // namespace ts::train
