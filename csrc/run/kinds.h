// Experiment kinds: what the config key `kind` selects. experiments/kinds.cpp lists every kind
// once (name, driver, whether it runs distributed, its own checks); the CLI, the launcher and
// the config check all read that list.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "csrc/config/config.h"
#include "csrc/run/outcome.h"

namespace ts::run {

// Runs one resolved variant into run_dir (resume: from its latest checkpoint).
using Driver = std::function<RunOutcome(const config::Config&, const std::string& variant,
                                        const std::filesystem::path& run_dir, bool resume)>;

struct Kind {
  std::string name;
  std::string about;  // one line for --help
  Driver run;
  bool distributed = false;  // runs as one rank of a multi-process job (`tinyseek launch --nproc N`)
  bool builds_model = true;  // the model config must make a valid transformer (nn/model_config.h)
  // Runs the training loop: its summary's "steps" counts train.steps, so --resume continues a
  // completed run whose train.steps grew. Other kinds rerun whole unless completed.
  bool trains = true;
  // The kind's own checks, config only (nothing is read or written), for a job of world_size
  // ranks; throws config::InvalidKeys or config::ConfigError. May be empty.
  std::function<void(const config::Config&, int world_size)> check;
};

// nullptr when `name` is no kind of `kinds`.
const Kind* find_kind(const std::vector<Kind>& kinds, const std::string& name);

// Every check of every variant, before the first one runs or writes anything: the kind exists
// (and runs distributed when world_size > 1), the model config is valid, the kind's own checks.
// Throws config::ConfigError starting with the file:line of the offending key.
void check_experiment(const config::Experiment& ex, const std::vector<Kind>& kinds, int world_size);

// The world size of this process's job: WORLD_SIZE (1 without it).
int launch_world_size();

}  // namespace ts::run
