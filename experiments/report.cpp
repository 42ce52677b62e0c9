#include "experiments/report.h"

#include "experiments/report_sections.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "csrc/config/config.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/checkpoint.h"
#include "csrc/util/fs.h"
#include "experiments/python_module.h"

namespace ts::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<fs::path> variant_dirs(const std::vector<fs::path>& dirs) {
  std::vector<fs::path> out;
  for (const auto& d : dirs) {
    if (!fs::is_directory(d)) throw config::ConfigError(d.string() + ": not a run folder");
    if (fs::exists(d / run::kSummaryFile)) {
      out.push_back(d);
      continue;
    }
    std::vector<fs::path> sub;
    for (const auto& e : fs::directory_iterator(d))
      if (e.is_directory() && fs::exists(e.path() / run::kSummaryFile)) sub.push_back(e.path());
    if (sub.empty()) throw config::ConfigError(d.string() + ": no summary.json here or in its subfolders");
    // Keep the order in which the variants ran (their config order) when the run recorded it.
    std::sort(sub.begin(), sub.end(), [](const fs::path& a, const fs::path& b) {
      return fs::last_write_time(a / run::kConfigFile) < fs::last_write_time(b / run::kConfigFile);
    });
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

// Appends the strings of summary[key] (a list) that `out` does not hold yet: a run names the
// technique-specific keys it wants in the report ("report_columns": extra table columns,
// "plot_keys": metrics.jsonl keys plotted against step by tinyseek.plots).
void collect_keys(const json& summary, const char* key, std::vector<std::string>& out) {
  if (!summary.contains(key) || !summary[key].is_array()) return;
  for (const auto& k : summary[key])
    if (k.is_string() && std::find(out.begin(), out.end(), k.get<std::string>()) == out.end())
      out.push_back(k.get<std::string>());
}

}  // namespace

std::string write_report(const std::vector<fs::path>& dirs, const fs::path& out_dir, const std::string& title) {
  auto vdirs = variant_dirs(dirs);
  std::vector<json> summaries;
  std::vector<std::string> extra_columns, plot_keys;
  for (const auto& d : vdirs) {
    std::ifstream in(d / run::kSummaryFile);
    summaries.push_back(json::parse(in));
    collect_keys(summaries.back(), "report_columns", extra_columns);
    collect_keys(summaries.back(), "plot_keys", plot_keys);
  }
  std::string md = "# " + title + "\n\n";
  md += "| variant | status | params | steps | train loss | val loss | best val | unigram entropy | tok/s | train s |";
  for (const auto& c : extra_columns) md += " " + c + " |";
  md += "\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|";
  for (size_t i = 0; i < extra_columns.size(); ++i) md += "---:|";
  md += "\n";
  json index = json::array();
  for (size_t i = 0; i < vdirs.size(); ++i) {
    const auto& d = vdirs[i];
    const json& s = summaries[i];
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |", s.value("variant", d.filename().string()),
                      s.value("status", "?"), s.value("parameters", int64_t{0}), s.value("steps", int64_t{0}),
                      json_number(s, "final_train_loss", "{:.4f}"), json_number(s, "final_val_loss", "{:.4f}"),
                      json_number(s, "best_val_loss", "{:.4f}"), json_number(s, "unigram_entropy", "{:.4f}"),
                      json_number(s, "tokens_per_s", "{:.0f}"), json_number(s, "train_seconds", "{:.1f}"));
    for (const auto& c : extra_columns) md += fmt::format(" {} |", json_number(s, c, "{:.4f}"));
    md += "\n";
    index.push_back({{"variant", s.value("variant", d.filename().string())}, {"dir", fs::absolute(d).string()}});
  }
  md += "\nLosses are mean next-token cross-entropy in nats; every number above was measured in these runs.\n";

  // Plots come from the Python helper (matplotlib); the table stands without them.
  fs::create_directories(out_dir / "plots");
  util::atomic_write(out_dir / "plots" / "runs.json", index.dump(2));
  if (run_python_module("plots", {(out_dir / "plots" / "runs.json").string(), (out_dir / "plots").string()},
                        out_dir / "plots" / "plot.log") == 0) {
    md += "\n![training loss](plots/loss.png)\n\n![validation loss](plots/val_loss.png)\n";
    for (const auto& k : plot_keys) {
      std::string file = k;  // as tinyseek.plots.plot_file names it
      for (char& c : file)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
      file += ".png";
      if (fs::exists(out_dir / "plots" / file)) md += fmt::format("\n![{}](plots/{})\n", k, file);
    }
  } else {
    md += "\n(plots unavailable: see plots/plot.log)\n";
  }
  md += loss_error_section(vdirs, out_dir);
  md += grpo_sections(vdirs);
  md += driver_sections(vdirs, out_dir);
  md += cost_section(vdirs, out_dir);
  util::atomic_write(out_dir / run::kReportFile, md);
  return md;
}

}  // namespace ts::experiments
