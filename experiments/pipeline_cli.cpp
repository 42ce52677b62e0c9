// `tinyseek pipeline show` (chart: text, SVG, JSON, PNG) and `tinyseek pipeline simulate`
// (bubble per rank, total, peak activations, the README's formula) over csrc/parallel.
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "csrc/config/config.h"
#include "csrc/parallel/chart.h"
#include "csrc/parallel/schedule.h"
#include "csrc/parallel/simulate_cores.h"
#include "csrc/parallel/simulator.h"
#include "csrc/train/checkpoint.h"
#include "csrc/util/fs.h"
#include "experiments/commands.h"
#include "experiments/python_module.h"

namespace ts::experiments {

namespace {

namespace fs = std::filesystem;
using namespace ts::parallel;
using nlohmann::json;

struct PipelineArgs {
  std::string schedule = "dualpipe";
  int ranks = 8;
  int microbatches = 20;
  std::string costs = "1,1,1,3";
  std::string out;
  bool json_out = false;
  double cores = 0;
  double message_cpu = 0;
  int width = 0;
};

// "F,B,W,FB[,p2p]" -> Costs; a usage error names the flag.
Costs parse_costs(const std::string& text) {
  std::vector<double> v;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      size_t used = 0;
      v.push_back(std::stod(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw config::ConfigError("--costs: '" + item + "' is not a number (expected F,B,W,FB or F,B,W,FB,p2p)");
    }
  }
  if (v.size() != 4 && v.size() != 5)
    throw config::ConfigError("--costs: expected F,B,W,FB or F,B,W,FB,p2p, got '" + text + "'");
  for (double x : v)
    if (!(x >= 0)) throw config::ConfigError("--costs: costs must be >= 0, got '" + text + "'");
  return {v[0], v[1], v[2], v[3], v.size() == 5 ? v[4] : 0.0};
}

Schedule build(const std::string& name, int ranks, int microbatches) {
  try {
    return make_schedule(parse_schedule_kind(name), ranks, microbatches);
  } catch (const std::invalid_argument& e) {
    throw config::ConfigError(e.what());
  }
}

Timeline timeline_for(const Schedule& s, const Costs& c, double cores, double message_cpu) {
  return cores > 0 ? simulate_shared_cores(s, c, cores, -1, message_cpu) : simulate(s, c);
}

void check_cores_args(const PipelineArgs& a) {
  if (a.message_cpu > 0 && !(a.cores > 0))
    throw config::ConfigError("--message-cpu: needs --cores (message work shares the cores with computes)");
}

int show(const PipelineArgs& a) {
  check_cores_args(a);
  const Schedule s = build(a.schedule, a.ranks, a.microbatches);
  const Costs c = parse_costs(a.costs);
  const Timeline tl = timeline_for(s, c, a.cores, a.message_cpu);
  TextOptions topt;
  if (a.width > 0) topt.max_width = a.width;
  std::cout << render_text(s, tl, topt);
  if (a.out.empty()) return 0;
  fs::create_directories(a.out);
  const std::string stem = fmt::format("{}_r{}_m{}", schedule_kind_name(s.kind), s.ranks, s.microbatches);
  const fs::path svg = fs::path(a.out) / (stem + ".svg"), js = fs::path(a.out) / (stem + ".json"),
                 png = fs::path(a.out) / (stem + ".png");
  util::atomic_write(svg, render_svg(s, tl));
  util::atomic_write(js, to_json(s, tl));
  std::cout << "wrote " << svg.string() << "\nwrote " << js.string() << "\n";
  if (run_python_module("pipeline_chart", {js.string(), png.string()}) != 0) {
    std::cerr << "error: the PNG needs matplotlib in " << python_executable() << " (`make setup`): python -m "
              << "tinyseek.pipeline_chart " << js.string() << " " << png.string() << " failed\n";
    return 1;
  }
  std::cout << "wrote " << png.string() << "\n";
  return 0;
}

json simulate_one(const Schedule& s, const Costs& c, double cores, double message_cpu) {
  const Timeline tl = timeline_for(s, c, cores, message_cpu);
  json j{{"schedule", std::string(schedule_kind_name(s.kind))},
         {"ranks", s.ranks},
         {"stages", s.stages},
         {"microbatches", s.microbatches},
         {"costs", {{"F", c.F}, {"B", c.B}, {"W", c.W}, {"FB", c.FB}, {"p2p", c.p2p}}},
         {"total", tl.total},
         {"critical_bubble", tl.critical_bubble},
         {"total_bubble", 0.0},
         {"busy", tl.busy},
         {"bubble", tl.bubble},
         {"peak_activations", tl.peak_activations},
         {"formula_bubble", formula_bubble(s.kind, s.ranks, c)},
         {"closed_form_bubble", closed_form_bubble(s.kind, s.ranks, c)},
         {"formula_preconditions", cores > 0 ? std::string("a device per rank (not --cores)")
                                             : formula_preconditions(s.kind, s.ranks, s.microbatches, c)}};
  double sum = 0;
  for (double b : tl.bubble) sum += b;
  j["total_bubble"] = sum;
  if (cores > 0) j["cores"] = cores;
  if (cores > 0 && message_cpu > 0) j["message_cpu"] = message_cpu;
  const TableRow row = table_row(s);
  j["table"] = {{"params_per_device", row.params_per_device},
                {"activations_per_device", row.activations_per_device},
                {"devices", row.devices}};
  return j;
}

std::string fmt_num(double v) { return fmt::format("{:.6g}", v); }

void print_one(const json& j) {
  std::cout << fmt::format("{}: {} ranks, {} stages, {} micro-batches; costs F={} B={} W={} FB={} p2p={}{}\n",
                           j["schedule"].get<std::string>(), j["ranks"].get<int>(), j["stages"].get<int>(),
                           j["microbatches"].get<int>(), fmt_num(j["costs"]["F"]), fmt_num(j["costs"]["B"]),
                           fmt_num(j["costs"]["W"]), fmt_num(j["costs"]["FB"]), fmt_num(j["costs"]["p2p"]),
                           j.contains("cores") ? fmt::format(", {} shared cores", fmt_num(j["cores"])) : "");
  std::cout << "rank  busy        bubble      peak activations\n";
  for (size_t r = 0; r < j["busy"].size(); ++r)
    std::cout << fmt::format("{:<5} {:<11} {:<11} {}\n", r, fmt_num(j["busy"][r]), fmt_num(j["bubble"][r]),
                             j["peak_activations"][r].get<int>());
  std::cout << fmt::format("step time {}; bubble: critical (max over ranks) {}, total (sum over ranks) {}\n",
                           fmt_num(j["total"]), fmt_num(j["critical_bubble"]), fmt_num(j["total_bubble"]));
  const std::string pre = j["formula_preconditions"];
  std::cout << fmt::format(
      "README formula bubble {} ({}); this schedule's closed form {}\n", fmt_num(j["formula_bubble"]),
      pre.empty() ? "its preconditions hold: equals the critical bubble" : "preconditions not met: " + pre,
      fmt_num(j["closed_form_bubble"]));
}

int simulate_cmd(const PipelineArgs& a) {
  check_cores_args(a);
  const Costs c = parse_costs(a.costs);
  std::vector<Schedule> schedules;
  if (a.schedule == "all") {
    // --ranks is PP: DualPipeV runs PP stages on PP/2 ranks.
    for (const char* k : {"1f1b", "zb1p", "dualpipe"}) schedules.push_back(build(k, a.ranks, a.microbatches));
    if (a.ranks % 2) throw config::ConfigError("--schedule all: --ranks (PP) must be even for DualPipe(V)");
    schedules.push_back(build("dualpipev", a.ranks / 2, a.microbatches));
  } else {
    schedules.push_back(build(a.schedule, a.ranks, a.microbatches));
  }
  json all = json::array();
  for (const auto& s : schedules) all.push_back(simulate_one(s, c, a.cores, a.message_cpu));
  if (a.json_out) {
    std::cout << (all.size() == 1 ? all[0] : all).dump(2) << "\n";
    return 0;
  }
  for (size_t i = 0; i < all.size(); ++i) {
    if (i) std::cout << "\n";
    print_one(all[i]);
  }
  if (all.size() > 1) {
    std::cout << "\n| method | bubble (simulated, critical) | README formula | params/device | activations/device | "
                 "devices |\n|---|---|---|---|---|---|\n";
    for (const auto& j : all)
      std::cout << fmt::format("| {} | {} | {} | {}x | {} | {} |\n", j["schedule"].get<std::string>(),
                               fmt_num(j["critical_bubble"]), fmt_num(j["formula_bubble"]),
                               j["table"]["params_per_device"].get<int>(),
                               j["table"]["activations_per_device"].get<int>(), j["table"]["devices"].get<int>());
  }
  return 0;
}

}  // namespace

Command add_pipeline_command(CLI::App& app) {
  auto show_args = std::make_shared<PipelineArgs>();
  auto sim_args = std::make_shared<PipelineArgs>();
  auto* sub = app.add_subcommand("pipeline", "Pipeline schedules: draw them, simulate them");
  sub->require_subcommand(1);
  auto common = [](CLI::App* c, PipelineArgs& a, bool allow_all) {
    c->add_option(
         "--schedule", a.schedule,
         std::string("1f1b | zb1p | dualpipe | dualpipev") + (allow_all ? " | all (the table; --ranks is PP)" : ""))
        ->capture_default_str();
    c->add_option("--ranks", a.ranks, "Pipeline ranks (devices); DualPipeV has 2x as many stages")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    c->add_option("--microbatches", a.microbatches, "Micro-batches per step")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 16));
    c->add_option("--costs", a.costs,
                  "F,B,W,FB[,p2p]: forward, input backward, weight backward, F&B (B is the input half)")
        ->capture_default_str();
    c->add_option("--cores", a.cores, "Simulate ranks sharing this many cores (0: a device per rank)")
        ->check(CLI::Range(0.0, 1e6));
    c->add_option("--message-cpu", a.message_cpu,
                  "With --cores: CPU work to move one message (a CPU transport's threads), in the costs' unit")
        ->check(CLI::Range(0.0, 1e9));
  };
  auto* show_cmd = sub->add_subcommand("show", "Draw a schedule: text here, SVG/JSON/PNG with --out");
  common(show_cmd, *show_args, false);
  show_cmd->add_option("--out", show_args->out, "Folder for <schedule>_r<R>_m<M>.{svg,json,png}");
  show_cmd->add_option("--width", show_args->width, "Text view width in characters")->check(CLI::Range(20, 100000));
  auto* sim_cmd = sub->add_subcommand("simulate", "Bubble per rank, total bubble, peak activations, formula value");
  common(sim_cmd, *sim_args, true);
  sim_cmd->add_flag("--json", sim_args->json_out, "Print JSON instead of tables");
  return {sub, [show_cmd, sim_cmd, show_args, sim_args] {
            if (show_cmd->parsed()) return show(*show_args);
            if (sim_cmd->parsed()) return simulate_cmd(*sim_args);
            return 2;
          }};
}

}  // namespace ts::experiments
