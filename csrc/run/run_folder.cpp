#include "csrc/run/run_folder.h"

#include <fmt/format.h>

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

}  // namespace ts::run
