// The `tinyseek` command line: run a reproduction, report on runs.
//
// Exit status: 0 done; 1 runtime failure; 2 usage or config error; 3 a run stopped on a
// non-finite loss; 130 interrupted (a checkpoint was saved; --resume continues).
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <c10/util/Exception.h>

#include "csrc/config/config.h"
#include "csrc/parallel/pipeline_train.h"
#include "csrc/run/kinds.h"
#include "csrc/run/run_folder.h"
#include "experiments/commands.h"
#include "experiments/kinds.h"
#include "experiments/report.h"

namespace fs = std::filesystem;
using namespace ts;

namespace {

void on_sigint(int) {
  // Second Ctrl-C: leave at once.
  if (run::interrupt_flag().exchange(true)) std::_Exit(130);
}

// The end-of-variant line: only what this kind measured (a parity or accumulation study has no losses).
std::string outcome_line(const config::Variant& v, const nlohmann::json& s) {
  std::string line = fmt::format("{}/{}: {}", v.config.name, v.name, s.value("status", "?"));
  if (s.value("steps", int64_t{0}) > 0) line += fmt::format(" after {} steps", s.value("steps", int64_t{0}));
  auto num = [&](const char* key, const char* fmt_str) {
    if (s.contains(key) && s[key].is_number()) line += fmt::format(fmt::runtime(fmt_str), s[key].get<double>());
  };
  num("final_train_loss", ": train loss {:.4f}");
  num("final_val_loss", ", val loss {:.4f}");
  num("unigram_entropy", " (unigram entropy {:.4f})");
  if (s.value("tokens_per_s", 0.0) > 0) line += fmt::format(", {:.0f} tok/s", s.value("tokens_per_s", 0.0));
  num("parity_max_rel_diff", ", max relative difference {:.3g}");
  return line;
}

// An error message as one printable line: control characters (a value echoed from a config may
// hold any byte) become \xNN, so the message cannot break lines or move the terminal's cursor.
std::string one_line(const std::string& msg) {
  std::string out;
  for (const unsigned char c : msg) {
    if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out += static_cast<char>(c);
  }
  return out;
}

int cmd_run(const std::string& path, const std::vector<std::string>& sets, const std::vector<std::string>& only,
            bool resume, bool report) {
  auto ex = config::load_experiment(path, sets);
  if (!only.empty()) {
    std::string names;
    for (const auto& v : ex.variants) names += (names.empty() ? "" : ", ") + v.name;
    for (const auto& o : only)
      if (std::none_of(ex.variants.begin(), ex.variants.end(), [&](const auto& v) { return v.name == o; }))
        throw config::ConfigError(fmt::format("--variant {}: {} has no such variant (it has: {})", o, path, names));
    std::erase_if(ex.variants,
                  [&](const auto& v) { return std::find(only.begin(), only.end(), v.name) == only.end(); });
  }
  // Every check of every variant runs before anything runs or is written. Under torchrun's
  // variables (or `tinyseek launch`) only distributed kinds run, and only rank 0 reports.
  run::check_experiment(ex, experiments::kinds(), run::launch_world_size());
  const bool lead_rank = parallel::launch_rank() == 0;
  const auto& first = ex.variants.front().config;
  const fs::path root = run::experiment_dir(first);
  std::signal(SIGINT, on_sigint);

  // --resume: no variant may change what its run is (model, data, ...); other changes are listed.
  if (resume)
    for (const auto& v : ex.variants) {
      const auto changes = run::resume_changes(v, run::RunFolder(root / v.name));
      if (lead_rank && !changes.empty()) {
        std::string list;
        for (const auto& c : changes) list += (list.empty() ? "" : ", ") + c;
        std::cout << v.config.name << "/" << v.name << ": resuming with changed settings: " << list << "\n";
      }
    }

  std::vector<fs::path> done;
  int rc = 0;
  for (const auto& v : ex.variants) {
    const run::Kind& kind = *run::find_kind(experiments::kinds(), v.config.kind);
    const run::RunFolder folder(root / v.name);
    if (resume) {
      const auto s = folder.read_summary();
      const bool completed = s && s->value("status", "") == "completed";
      if (completed && (!kind.trains || s->value("steps", int64_t{0}) >= v.config.train.steps)) {
        if (lead_rank) std::cout << v.config.name << "/" << v.name << ": already completed, skipped (--resume)\n";
        done.push_back(folder.dir());
        continue;
      }
    }
    run::RunOutcome out;
    try {
      out = kind.run(v.config, v.name, folder.dir(), resume);
    } catch (const config::InvalidKeys& e) {
      throw v.locate(e);  // a check that needed the data (vocab_size against its tokens, say)
    }
    done.push_back(folder.dir());
    if (lead_rank) std::cout << outcome_line(v, out.summary) << "\n";
    if (out.status == run::RunStatus::kInterrupted) return run::exit_status(out.status);
    if (run::interrupt_flag().load()) {  // Ctrl-C after the variant's training (a study's measurements)
      if (lead_rank)
        std::cout << v.config.name << ": interrupted after variant " << v.name << "; the rest is not run\n";
      return run::exit_status(run::RunStatus::kInterrupted);
    }
    rc = std::max(rc, run::exit_status(out.status));
    if (out.status == run::RunStatus::kStopped) return rc;
  }
  parallel::release_process_dist();
  if (!lead_rank || !report) return rc;
  const std::string md =
      experiments::write_report(done, root, first.name + ": " + (first.description.empty() ? path : first.description));
  std::cout << "\n" << md << "\nreport: " << (root / run::kReportFile).string() << "\n";
  if (!first.next_steps.empty()) {
    std::string next = first.next_steps;
    for (size_t at; (at = next.find("{run}")) != std::string::npos;) next.replace(at, 5, root.string());
    std::cout << "next: " << next << "\n";
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tinyseek: DeepSeek's training-efficiency techniques, reproduced at small scale"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tinyseek 0.1");
  if (std::getenv("RANK")) std::setvbuf(stdout, nullptr, _IOLBF, 0);  // ranks' output through pipes, line by line
  const std::vector<experiments::Command> commands = {
      experiments::add_launch_command(app), experiments::add_pipeline_command(app),
      experiments::add_generate_command(app), experiments::add_export_command(app)};

  std::string config_path;
  std::vector<std::string> sets;
  bool resume = false;
  auto* run = app.add_subcommand("run", "Train and evaluate every variant a config names, then write a report");
  run->add_option("config", config_path, "YAML config, e.g. configs/quickstart.yaml")->required();
  run->add_option("--set", sets, "Override a key: --set train.steps=100 (repeatable)");
  run->add_flag("--resume", resume, "Continue from the latest checkpoints of this run");
  std::vector<std::string> only;
  run->add_option("--variant", only, "Run only this variant (repeatable); the report covers the variants run");
  bool no_report = false;
  run->add_flag("--no-report", no_report, "Skip report.md and its plots (the run folders are still written)");

  std::string check_path;
  std::vector<std::string> check_sets;
  auto* check = app.add_subcommand("check", "Run every check a config's variants get before `run`, write nothing");
  check->add_option("config", check_path, "YAML config")->required();
  check->add_option("--set", check_sets, "Override a key, as for run (repeatable)");
  int check_nproc = 0;
  check->add_option("--nproc", check_nproc, "Check for a job of this many ranks (default: WORLD_SIZE, or 1)")
      ->check(CLI::Range(1, 1 << 16));

  std::vector<std::string> report_dirs;
  std::string report_out;
  auto* report = app.add_subcommand("report", "Compare runs: Markdown table and PNG plots");
  report->add_option("run_dirs", report_dirs, "Run folders (runs/<name> or runs/<name>/<variant>)")->required();
  report->add_option("--out", report_out, "Where report.md and plots/ go (default: the first folder)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    if (*run) return cmd_run(config_path, sets, only, resume, !no_report);
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
    if (*check) {
      const auto ex = config::load_experiment(check_path, check_sets);
      const int world = check_nproc > 0 ? check_nproc : run::launch_world_size();
      run::check_experiment(ex, experiments::kinds(), world);
      std::string names;
      for (const auto& v : ex.variants) names += (names.empty() ? "" : ", ") + v.name;
      std::cout << check_path << ": ok (" << ex.variants.size() << " variant" << (ex.variants.size() == 1 ? "" : "s")
                << ": " << names << (world > 1 ? fmt::format("; {} ranks", world) : "") << ")\n";
      return 0;
    }
    if (*report) {
      std::vector<fs::path> dirs(report_dirs.begin(), report_dirs.end());
      const fs::path out = report_out.empty() ? dirs.front() : fs::path(report_out);
      std::cout << experiments::write_report(dirs, out, "tinyseek report")
                << "\nreport: " << (out / run::kReportFile).string() << "\n";
      return 0;
    }
  } catch (const config::ConfigError& e) {
    std::cerr << "error: " << one_line(e.what()) << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << one_line(e.what_without_backtrace()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << one_line(e.what()) << "\n";
    return 1;
  }
  return 0;
}
