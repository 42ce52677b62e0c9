#include "experiments/report.h"

#include "experiments/report_sections.h"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "csrc/config/config.h"
#include "csrc/train/checkpoint.h"
#include "tinyseek_paths.h"

namespace ts::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<fs::path> variant_dirs(const std::vector<fs::path>& dirs) {
  std::vector<fs::path> out;
  for (const auto& d : dirs) {
    if (!fs::is_directory(d)) throw config::ConfigError(d.string() + ": not a run folder");
    if (fs::exists(d / "summary.json")) {
      out.push_back(d);
      continue;
    }
    std::vector<fs::path> sub;
    for (const auto& e : fs::directory_iterator(d))
      if (e.is_directory() && fs::exists(e.path() / "summary.json")) sub.push_back(e.path());
    if (sub.empty()) throw config::ConfigError(d.string() + ": no summary.json here or in its subfolders");
    // Keep the order in which the variants ran (their config order) when the run recorded it.
    std::sort(sub.begin(), sub.end(), [](const fs::path& a, const fs::path& b) {
      return fs::last_write_time(a / "config.resolved.yaml") < fs::last_write_time(b / "config.resolved.yaml");
    });
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::string num(const json& j, const char* key, const char* f = "{:.4f}") {
  if (!j.contains(key) || !j[key].is_number()) return "n/a";
  return fmt::format(fmt::runtime(f), j[key].get<double>());
}

}  // namespace

std::string write_report(const std::vector<fs::path>& dirs, const fs::path& out_dir, const std::string& title) {
  auto vdirs = variant_dirs(dirs);
  std::string md = "# " + title + "\n\n";
  md += "| variant | status | params | steps | train loss | val loss | best val | unigram entropy | tok/s | train s |\n";
  md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  json index = json::array();
  for (const auto& d : vdirs) {
    std::ifstream in(d / "summary.json");
    json s = json::parse(in);
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", s.value("variant", d.filename().string()),
                      s.value("status", "?"), s.value("parameters", int64_t{0}), s.value("steps", int64_t{0}),
                      num(s, "final_train_loss"), num(s, "final_val_loss"), num(s, "best_val_loss"),
                      num(s, "unigram_entropy"), num(s, "tokens_per_s", "{:.0f}"), num(s, "train_seconds", "{:.1f}"));
    index.push_back({{"variant", s.value("variant", d.filename().string())}, {"dir", fs::absolute(d).string()}});
  }
  md += "\nLosses are mean next-token cross-entropy in nats; every number above was measured in these runs.\n";

  // Plots come from the Python helper (matplotlib); the table stands without them.
  fs::create_directories(out_dir / "plots");
  train::atomic_write(out_dir / "plots" / "runs.json", index.dump(2));
  const std::string cmd = fmt::format("PYTHONPATH='{}/python' '{}' -m tinyseek.plots '{}' '{}' > '{}' 2>&1",
                                      TINYSEEK_SOURCE_DIR, TINYSEEK_PYTHON, (out_dir / "plots" / "runs.json").string(),
                                      (out_dir / "plots").string(), (out_dir / "plots" / "plot.log").string());
  if (std::system(cmd.c_str()) == 0) {
    md += "\n![training loss](plots/loss.png)\n\n![validation loss](plots/val_loss.png)\n";
  } else {
    md += "\n(plots unavailable: see plots/plot.log)\n";
  }
  md += loss_error_section(vdirs, out_dir);
  md += driver_sections(vdirs, out_dir);
  train::atomic_write(out_dir / "report.md", md);
  return md;
}

}  // namespace ts::experiments
