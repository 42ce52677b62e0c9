#include "csrc/train/trained_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "csrc/run/run_folder.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/hf.h"

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
  if (is_hf_ref(ref.dir)) {
    if (ref.step >= 0)
      throw ConfigError(fmt::format("--step {}: {} is one checkpoint, with no steps", ref.step, ref.dir));
    r.hf = true;
    r.dir = hf_ref_path(ref.dir);
    r.config_path = (r.dir / "config.json").string();
    r.config = hf_load_config(r.dir);
    return r;
  }
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
  if (run.hf)
    load_hf_state(*model, run.config, hf_load_tensors(run.dir), "hf:" + run.dir.string());
  else
    load_weights(run.step_dir, *model, run.weights_prefix);
  return model;
}

namespace {
TrainedRun checked_init(const std::string& from, const config::Config& c, const std::string& key) {
  TrainedRun init;
  try {
    init = resolve_run({from, -1});
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}", key, e.what()));
  }
  const auto diff = model_differences(c.model, init.config.model);
  if (!diff.empty()) {
    std::string list;
    for (const auto& d : diff) list += (list.empty() ? "" : "; ") + d;
    throw ConfigError(
        fmt::format("{}: the configured model is not the one in {} (here vs there: {})", key, from, list));
  }
  return init;
}
}  // namespace

void check_init_from(const std::string& from, const config::Config& c, const std::string& key) {
  checked_init(from, c, key);
}

void init_weights_from(const std::string& from, const config::Config& c, nn::TransformerImpl& model,
                       const std::string& key) {
  const TrainedRun init = checked_init(from, c, key);
  try {
    if (init.hf) {
      load_hf_state(model, c, hf_load_tensors(init.dir), from);
      return;
    }
    // Same architecture: copy tensor by tensor (MTP modules the source lacks keep their values).
    nn::Transformer src = load_model(init);
    std::map<std::string, torch::Tensor> have;
    for (const auto& p : src->named_parameters()) have[p.key()] = p.value();
    for (const auto& b : src->named_buffers()) have[b.key()] = b.value();
    torch::NoGradGuard ng;
    auto copy = [&](const std::string& name, torch::Tensor& dst) {
      const auto it = have.find(name);
      if (it == have.end()) {
        if (name.starts_with("mtp.") || name.ends_with("expert_bias") || name.ends_with("fp8_amax_history")) return;
        throw ConfigError(fmt::format("{}: {} has no tensor '{}'", key, from, name));
      }
      dst.copy_(it->second);
    };
    for (auto& p : model.named_parameters()) copy(p.key(), p.value());
    for (auto& b : model.named_buffers()) copy(b.key(), b.value());
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}", key, e.what()));
  }
}

}  // namespace ts::train
