// The run folder every experiment kind writes, named once:
//   <output.dir>/<name>/<variant>/config.resolved.yaml   the variant's config, every field
//                                 metrics.jsonl          one JSON object per logged step
//                                 summary.json           how the variant ended, what it measured
//                                 checkpoints/           train/checkpoint.h
//   <output.dir>/<name>/report.md, plots/                the comparison (experiments/report.h)
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "csrc/config/config.h"

namespace ts::run {

inline constexpr const char* kConfigFile = "config.resolved.yaml";
inline constexpr const char* kMetricsFile = "metrics.jsonl";
inline constexpr const char* kSummaryFile = "summary.json";
inline constexpr const char* kCheckpointsDir = "checkpoints";
inline constexpr const char* kReportFile = "report.md";
inline constexpr const char* kPlotsDir = "plots";

// <output.dir>/<name>: the experiment's folder (the variants' folders are inside).
std::filesystem::path experiment_dir(const config::Config& cfg);

class RunFolder {
 public:
  explicit RunFolder(std::filesystem::path dir) : dir_(std::move(dir)) {}

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path config_path() const { return dir_ / kConfigFile; }
  std::filesystem::path metrics_path() const { return dir_ / kMetricsFile; }
  std::filesystem::path summary_path() const { return dir_ / kSummaryFile; }
  std::filesystem::path checkpoints() const { return dir_ / kCheckpointsDir; }

  // Creates the folder and writes config.resolved.yaml (atomically).
  void write_config(const config::Config& cfg) const;
  // Writes summary.json (atomically).
  void write_summary(const nlohmann::json& summary) const;
  // summary.json, or nullopt when there is none; throws naming the file when it does not parse.
  std::optional<nlohmann::json> read_summary() const;
  // A fresh start: removes the checkpoints and the summary of an earlier run in this folder.
  void clear() const;

 private:
  std::filesystem::path dir_;
};

// What --resume of `variant` into `folder` changes against the config the run started with (its
// config.resolved.yaml): "key: before -> after" for every changed key, sorted. Throws
// config::ConfigError (at the file:line of the key, when the config sets it) when a changed key
// makes resuming meaningless: the kind, the seed, the data (data.*), the model (model.*), its
// precision (precision.*) or how it is split over ranks (parallel.*, pipeline.*), or the task and
// starting point of a GRPO run (task.*, grpo.init_from). A folder without a config gives no changes.
std::vector<std::string> resume_changes(const config::Variant& variant, const RunFolder& folder);

// metrics.jsonl, appended line by line. Fresh (keep_through_step < 0): the file starts empty. On
// resume, lines past the checkpoint's step are dropped first, so the file reads as if the run had
// never stopped.
class MetricsLog {
 public:
  MetricsLog(const std::filesystem::path& path, int64_t keep_through_step);
  void write(const nlohmann::json& line);

 private:
  std::ofstream out_;
};

}  // namespace ts::run
