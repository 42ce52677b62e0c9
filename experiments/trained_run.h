// RUN_DIR[/VARIANT] [--step N]: a trained run's checkpoint, the way the commands that read one
// (generate; export and init_from later) name it.
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <string>

#include "csrc/config/config.h"

namespace ts::experiments {

struct RunRef {
  std::string dir;    // runs/<name>/<variant>, or runs/<name> when it has one variant
  int64_t step = -1;  // checkpoint step; < 0: the latest
};

// The positional RUN_DIR and --step.
void add_run_options(CLI::App& sub, RunRef& ref);

struct TrainedRun {
  std::filesystem::path dir;  // the variant folder
  std::string config_path;    // its config.resolved.yaml
  config::Config config;
  int64_t step = 0;
  std::filesystem::path step_dir;  // the checkpoint folder of that step
};

// Finds the variant folder, parses its resolved config and picks the checkpoint. Throws
// config::ConfigError (exit 2) naming what is missing: the folder, a variant among several, the
// checkpoint, the step (with the steps there are).
TrainedRun resolve_run(const RunRef& ref);

}  // namespace ts::experiments
