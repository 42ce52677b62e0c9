#include "csrc/run/run_folder.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <sstream>

#include "csrc/util/fs.h"

namespace ts::run {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path experiment_dir(const config::Config& cfg) { return fs::path(cfg.output.dir) / cfg.name; }

void RunFolder::write_config(const config::Config& cfg) const {
  fs::create_directories(dir_);
  util::atomic_write(config_path(), config::to_yaml(cfg));
}

void RunFolder::write_summary(const json& summary) const { util::atomic_write(summary_path(), summary.dump(2) + "\n"); }

std::optional<json> RunFolder::read_summary() const {
  std::ifstream in(summary_path());
  if (!in) return std::nullopt;
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(fmt::format("{}: not valid JSON ({})", summary_path().string(), e.what()));
  }
}

void RunFolder::clear() const {
  util::remove_all(checkpoints());
  fs::remove(summary_path());
}

MetricsLog::MetricsLog(const fs::path& path, int64_t keep_through_step) {
  std::string kept;
  if (keep_through_step >= 0 && fs::exists(path)) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception&) {
        break;  // a line cut short by a crash: it and everything after it are dropped
      }
      if (j.value("step", int64_t{0}) <= keep_through_step) kept += line + "\n";
    }
  }
  util::atomic_write(path, kept);
  out_.open(path, std::ios::app);
}

void MetricsLog::write(const json& line) {
  // Invalid UTF-8 in a string (a generated completion, say) is written replaced, never thrown.
  out_ << line.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  out_.flush();
}

namespace {

bool prevents_resume(const std::string& key, const std::string& kind) {
  // Pretraining's checkpoints are sharded by name and load into any data/expert-parallel layout.
  if (kind == "pretrain" && key.starts_with("parallel.")) return false;
  for (const char* p : {"data.", "model.", "precision.", "parallel.", "pipeline.", "task."})
    if (key.starts_with(p)) return true;
  return key == "kind" || key == "seed" || key == "grpo.init_from";
}

}  // namespace

std::vector<std::string> resume_changes(const config::Variant& variant, const RunFolder& folder) {
  std::ifstream in(folder.config_path());
  if (!in) return {};
  std::stringstream text;
  text << in.rdbuf();
  std::map<std::string, std::string> before, after;
  try {
    before = config::flat_values(config::parse_config(text.str(), folder.config_path().string()));
  } catch (const std::exception& e) {
    throw config::ConfigError(folder.config_path().string() + ": cannot resume from this run's config: " + e.what());
  }
  after = config::flat_values(variant.config);
  std::vector<std::string> changes;
  for (const auto& [key, now] : after) {
    const auto it = before.find(key);
    const std::string was = it == before.end() ? "(unset)" : it->second;
    if (was == now) continue;
    if (prevents_resume(key, variant.config.kind))
      throw config::ConfigError(fmt::format(
          "{}: --resume: {} is {} here but {} in the run being resumed ({}): a run cannot resume with another "
          "kind, seed, data, model, precision or parallel layout; start a new run (another name) or keep the "
          "value",
          variant.where(key), key, now, was, folder.config_path().string()));
    changes.push_back(fmt::format("{}: {} -> {}", key, was, now));
  }
  return changes;
}

}  // namespace ts::run
