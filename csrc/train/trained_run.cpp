#include "csrc/train/trained_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "csrc/run/run_folder.h"
#include "csrc/train/checkpoint.h"

namespace ts::train {

namespace fs = std::filesystem;
using config::ConfigError;

namespace {

// RUN_DIR itself when it holds config.resolved.yaml, else its only variant.
fs::path variant_dir(const std::string& arg) {
  const fs::path d(arg);
  std::error_code ec;
  if (!fs::is_directory(d, ec)) throw ConfigError(arg + ": no such run folder");
  if (fs::exists(d / run::kConfigFile)) return d;
  std::vector<fs::path> variants;
  for (const auto& e : fs::directory_iterator(d))
    if (e.is_directory() && fs::exists(e.path() / run::kConfigFile)) variants.push_back(e.path());
  std::sort(variants.begin(), variants.end());
  if (variants.size() == 1) return variants[0];
  if (variants.empty())
    throw ConfigError(arg + ": not a run folder (no " + run::kConfigFile + " here or in a variant folder)");
  std::string names;
  for (const auto& v : variants) names += (names.empty() ? "" : ", ") + v.filename().string();
  throw ConfigError(fmt::format("{}: holds {} variants ({}); name one, e.g. {}", arg, variants.size(), names,
                                (d / variants[0].filename()).string()));
}

}  // namespace

TrainedRun resolve_run(const RunRef& ref) {
  TrainedRun r;
  r.dir = variant_dir(ref.dir);
  r.config_path = (r.dir / run::kConfigFile).string();
  std::ifstream in(r.config_path);
  std::stringstream ss;
  ss << in.rdbuf();
  r.config = config::parse_config(ss.str(), r.config_path);

  const fs::path ckpt = r.dir / run::kCheckpointsDir;
  const auto steps = train::checkpoint_steps(ckpt);
  if (steps.empty()) {
    if (fs::exists(ckpt / "rank_0"))
      throw ConfigError(r.dir.string() +
                        ": checkpoints are per pipeline rank (checkpoints/rank_*); use a one-process run");
    throw ConfigError(r.dir.string() + ": no checkpoint (checkpoints/ is empty or missing)");
  }
  r.step = ref.step;
  if (r.step < 0) {
    r.step = train::latest_checkpoint_step(ckpt).value_or(steps.back());
  } else if (std::find(steps.begin(), steps.end(), r.step) == steps.end()) {
    std::string have;
    for (auto s : steps) have += (have.empty() ? "" : ", ") + std::to_string(s);
    throw ConfigError(
        fmt::format("--step {}: {} has no checkpoint of that step (it has: {})", r.step, r.dir.string(), have));
  }
  r.step_dir = train::checkpoint_dir(ckpt, r.step);
  r.weights_prefix = r.config.kind == "grpo" ? "policy." : "";
  return r;
}

nn::Transformer load_model(const TrainedRun& run) {
  nn::Transformer model(run.config);
  load_weights(run.step_dir, *model, run.weights_prefix);
  return model;
}

}  // namespace ts::train
