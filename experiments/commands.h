// `tinyseek` subcommands beyond run/report, each registered on the app before parsing and
// run (inside main's error handling) when the user picked it.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace ts::experiments {

struct Command {
  CLI::App* app = nullptr;   // the registered subcommand
  std::function<int()> run;  // its action; returns the exit status
};

// `tinyseek launch --nproc N CONFIG [--set k=v ...]` (launch.cpp).
Command add_launch_command(CLI::App& app);
// `tinyseek pipeline show|simulate ...` (pipeline_cli.cpp).
Command add_pipeline_command(CLI::App& app);
// `tinyseek generate RUN_DIR[/VARIANT] --prompt TEXT ...` (generate_cli.cpp).
Command add_generate_command(CLI::App& app);
// `tinyseek export RUN_DIR[/VARIANT] [--step N] --format hf --out DIR` (export_cli.cpp).
Command add_export_command(CLI::App& app);

}  // namespace ts::experiments
