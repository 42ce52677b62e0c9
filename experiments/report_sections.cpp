#include "experiments/report_sections.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "csrc/config/config.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/checkpoint.h"
#include "csrc/util/fs.h"
#include "experiments/python_module.h"

namespace ts::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Curves {
  std::string variant, kind;
  fs::path dir;
  std::map<int64_t, double> loss, val;  // step -> value
};

Curves read_curves(const fs::path& dir) {
  Curves c{dir.filename().string(), "", dir, {}, {}};
  if (std::ifstream s(dir / run::kSummaryFile); s) {
    const json j = json::parse(s);
    c.variant = j.value("variant", c.variant);
    c.kind = j.value("kind", "");
  }
  std::ifstream in(dir / run::kMetricsFile);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step")) continue;
    const auto step = j["step"].get<int64_t>();
    if (j.contains("loss") && j["loss"].is_number()) c.loss[step] = j["loss"].get<double>();
    if (j.contains("val_loss") && j["val_loss"].is_number()) c.val[step] = j["val_loss"].get<double>();
  }
  return c;
}

// Draws plots/<file>.png with `python -m tinyseek.study_plots <plot>` from `runs` (written to
// plots/<file>.json); the Markdown that shows it, or a note naming its log when it failed.
std::string study_plot(const fs::path& out_dir, const std::string& plot, const json& runs, const std::string& file,
                       const std::string& alt) {
  const fs::path dir = out_dir / "plots";
  fs::create_directories(dir);
  util::atomic_write(dir / (file + ".json"), runs.dump(2));
  const int rc =
      run_python_module("study_plots", {plot, (dir / (file + ".json")).string(), (dir / (file + ".png")).string()},
                        dir / (file + ".log"));
  return rc == 0 ? fmt::format("\n![{}](plots/{}.png)\n", alt, file)
                 : fmt::format("\n(plot unavailable: see plots/{}.log)\n", file);
}

// Mean of v over steps[b, e) divided by the mean of base over the same steps, minus 1.
double rel(const std::vector<double>& v, const std::vector<double>& base, size_t b, size_t e) {
  double sv = 0, sb = 0;
  for (size_t i = b; i < e; ++i) sv += v[i], sb += base[i];
  return sv / sb - 1;
}

std::string pct(double v) { return std::isfinite(v) ? fmt::format("{:+.3f}%", 100 * v) : "n/a"; }

// A GRPO variant's paragraph of the report: held-out accuracy before and after RL, and how the
// training curves moved (the first and last 10% of steps).
std::string grpo_section(const json& s, const config::Config& c) {
  const int64_t k = c.grpo.eval_k;
  std::string md = fmt::format("\n## GRPO `{}` from {}\n\n", s.value("variant", "?"), s.value("init_from", "?"));
  md += fmt::format(
      "loss `{}`, importance sampling `{}`, epsilon {} / {}, beta {}, mu {}, {} prompts x {} samples, "
      "advantages scaled by `{}`{}; {} steps.\n\n",
      c.grpo.loss_type, c.grpo.importance_sampling, c.grpo.epsilon,
      c.grpo.epsilon_high > 0 ? c.grpo.epsilon_high : c.grpo.epsilon, c.grpo.beta, c.grpo.num_iterations,
      c.grpo.prompts_per_step, c.grpo.group_size, c.grpo.scale_rewards, c.grpo.clip ? "" : ", no clipping",
      s.value("steps", int64_t{0}));
  md += fmt::format("| held-out ({} problems) | before RL | after RL | change |\n|---|---:|---:|---:|\n",
                    c.grpo.eval_problems);
  auto row = [&](const std::string& label, const std::string& key, bool points) {
    std::string change = "n/a";
    if (s.contains(key + "_start") && s[key + "_start"].is_number() && s.contains(key) && s[key].is_number()) {
      const double d = s[key].get<double>() - s[key + "_start"].get<double>();
      change = points ? fmt::format("{:+.1f} points", 100 * d) : fmt::format("{:+.2f}", d);
    }
    md += fmt::format("| {} | {} | {} | {} |\n", label, json_number(s, key + "_start"), json_number(s, key), change);
  };
  row("greedy pass@1", "heldout_pass@1", true);
  if (k > 0)
    row(fmt::format("pass@{} (temperature {})", k, c.grpo.temperature), fmt::format("heldout_pass@{}", k), true);
  row("format rate (greedy)", "format_rate", true);
  row("mean completion length (greedy, tokens)", "mean_length", false);
  md += "\n| training rollouts | first 10% of steps | last 10% of steps |\n|---|---:|---:|\n";
  for (const auto& [label, key] : std::vector<std::pair<std::string, std::string>>{
           {"reward", "reward"},
           {"accuracy", "accuracy"},
           {"mean length", "completions/mean_length"},
           {"mean length of correct completions", "completions/mean_length_correct"},
           {"mean length of wrong completions", "completions/mean_length_incorrect"},
           {"KL to the reference", "kl"},
           {"entropy", "entropy"}})
    md += fmt::format("| {} | {} | {} |\n", label, json_number(s, key + "_first10"), json_number(s, key + "_last10"));
  return md;
}

}  // namespace

std::string loss_error_section(const std::vector<fs::path>& variant_dirs, const fs::path& out_dir) {
  // Only variants of the first one's kind compare (a GRPO loss is no language-modelling loss).
  std::vector<Curves> runs;
  std::string kind;
  for (const auto& d : variant_dirs) {
    auto c = read_curves(d);
    if (c.loss.empty()) continue;
    if (runs.empty()) kind = c.kind;
    if (c.kind == kind) runs.push_back(std::move(c));
  }
  // The cost study compares its variants in its own section (cost_section), not loss to loss.
  if (runs.size() < 2 || kind == "cost_study") return "";
  const Curves& base = runs.front();
  std::string md = fmt::format(
      "\n## Relative loss error against `{}`\n\n"
      "(L_variant / L_{} - 1) on the same training batches, step by step. Last 10%: mean losses over the last "
      "10% of logged steps; curve max: the largest |.| of 10-step means; val: the final validation loss.\n\n"
      "| variant | last 10% | curve max | val |\n|---|---:|---:|---:|\n",
      base.variant, base.variant);
  json index = json::array({{{"variant", base.variant}, {"dir", fs::absolute(base.dir).string()}}});
  for (size_t r = 1; r < runs.size(); ++r) {
    const Curves& v = runs[r];
    std::vector<double> lv, lb;
    for (const auto& [step, loss] : v.loss)
      if (auto it = base.loss.find(step); it != base.loss.end()) lv.push_back(loss), lb.push_back(it->second);
    const size_t n = lv.size();
    double last = NAN, curve = NAN, val = NAN;
    if (n) {
      last = rel(lv, lb, n - std::max<size_t>(1, n / 10), n);
      curve = 0;
      for (size_t b = 0; b + std::min<size_t>(10, n) <= n; ++b)
        curve = std::max(curve, std::fabs(rel(lv, lb, b, b + std::min<size_t>(10, n))));
    }
    for (auto it = v.val.rbegin(); it != v.val.rend(); ++it)
      if (auto jt = base.val.find(it->first); jt != base.val.end()) {
        val = it->second / jt->second - 1;
        break;
      }
    md += fmt::format("| {} | {} | {} | {} |\n", v.variant, pct(last), pct(curve), pct(val));
    index.push_back({{"variant", v.variant}, {"dir", fs::absolute(v.dir).string()}});
  }
  md += study_plot(out_dir, "loss_error", index, "rel_loss_error", "relative loss error");
  return md;
}

std::string driver_sections(const std::vector<fs::path>& variant_dirs, const fs::path& out_dir) {
  std::string md;
  for (const auto& d : variant_dirs) {
    std::ifstream in(d / "report_section.md");
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    std::string rel = fs::relative(fs::absolute(d), fs::absolute(out_dir)).generic_string();
    if (rel.empty()) rel = ".";
    for (size_t pos; (pos = text.find("{{dir}}")) != std::string::npos;) text.replace(pos, 7, rel);
    md += "\n" + text;
  }
  return md;
}

namespace {

// "1.23 M" style: FLOPs and parameter counts in a table.
std::string si(double v) {
  const char* units[] = {"", " k", " M", " G", " T", " P"};
  int u = 0;
  while (std::fabs(v) >= 1000 && u < 5) v /= 1000, ++u;
  return fmt::format("{:.3g}{}", v, units[u]);
}

std::string ratio(double a, double b) {
  return std::isfinite(a) && std::isfinite(b) && b > 0 ? fmt::format("{:.2f}x", a / b) : "n/a";
}

double number(const json& j, const std::string& key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

}  // namespace

std::string cost_section(const std::vector<fs::path>& variant_dirs, const fs::path& out_dir) {
  std::vector<Curves> runs;
  std::vector<json> sums;
  for (const auto& d : variant_dirs) {
    std::ifstream in(d / run::kSummaryFile);
    if (!in) continue;
    json s = json::parse(in, nullptr, false);
    if (s.is_discarded() || s.value("kind", "") != "cost_study" || !s.contains("train_flops_per_step")) continue;
    runs.push_back(read_curves(d));
    sums.push_back(std::move(s));
  }
  if (runs.size() < 2) return "";
  // Decode contexts: the decode_tok_s_<ctx> keys of the first variant, in its column order.
  std::vector<std::string> contexts;
  for (const auto& c : sums[0].value("report_columns", json::array()))
    if (c.is_string() && c.get<std::string>().starts_with("decode_tok_s_"))
      contexts.push_back(c.get<std::string>().substr(13));
  const std::string subject = runs[0].variant;

  std::string md = fmt::format(
      "\n## Cost: `{}` against the baselines\n\n"
      "Parameters, KV bytes and FLOPs are counted from the shapes (csrc/nn/cost.h: matrix products, experts "
      "actually routed, the attention a causal query sees, MTP; a training step is 3 forward passes); active "
      "parameters are those one token uses (the routed experts it skips left out; MTP modules not counted, as "
      "they do not decode). Speeds and losses are measured in this run; decoding is batch {} with a cache of "
      "the given context (random contents: time does not depend on them); KV bytes as the decoder's cache holds "
      "them.\n\n",
      subject, sums[0].value("decode_batch_size", int64_t{0}));
  md +=
      "| model | total params | active params | KV bytes/token | train FLOPs/token | training FLOPs | val loss | "
      "train tok/s |";
  for (const auto& c : contexts) md += fmt::format(" decode tok/s @{} |", c);
  md += "\n|---|---:|---:|---:|---:|---:|---:|---:|";
  for (size_t i = 0; i < contexts.size(); ++i) md += "---:|";
  md += "\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& s = sums[i];
    md += fmt::format("| {} | {} | {} | {:.0f} | {} | {} | {} | {:.0f} |", runs[i].variant,
                      si(number(s, "total_parameters")), si(number(s, "active_parameters")),
                      number(s, "kv_cache_bytes_per_token"), si(number(s, "train_flops_per_token")),
                      si(number(s, "train_flops_per_step") * number(s, "steps")),
                      json_number(s, "final_val_loss", "{:.4f}"), number(s, "tokens_per_s"));
    for (const auto& c : contexts) md += fmt::format(" {:.0f} |", number(s, "decode_tok_s_" + c));
    md += "\n";
  }

  // The first FLOPs at which the subject's validation loss reaches `target`, interpolated in log
  // FLOPs between the two evaluations around it; NAN if it never does. `at_first`: reached by the
  // first evaluation already (the count is then an upper bound).
  const double subject_fps = number(sums[0], "train_flops_per_step");
  auto flops_to_reach = [&](double target, bool& at_first) {
    at_first = false;
    double prev_f = NAN, prev_l = NAN;
    for (const auto& [step, loss] : runs[0].val) {
      const double f = static_cast<double>(step) * subject_fps;
      if (loss <= target) {
        if (!std::isfinite(prev_f)) {
          at_first = true;
          return f;
        }
        const double t = (prev_l - target) / (prev_l - loss);
        return std::exp(std::log(prev_f) + t * (std::log(f) - std::log(prev_f)));
      }
      prev_f = f, prev_l = loss;
    }
    return static_cast<double>(NAN);
  };
  md += fmt::format(
      "\n| `{}` against | baseline's final val loss | training FLOPs `{}` needs to reach it / the baseline's | "
      "KV cache | training tok/s |",
      subject, subject);
  for (const auto& c : contexts) md += fmt::format(" decode tok/s @{} |", c);
  md += "\n|---|---:|---:|---:|---:|";
  for (size_t i = 0; i < contexts.size(); ++i) md += "---:|";
  md += "\n";
  for (size_t i = 1; i < runs.size(); ++i) {
    const auto& s = sums[i];
    const double target = number(s, "final_val_loss");
    const double base_flops = number(s, "train_flops_per_step") * number(s, "steps");
    bool at_first = false;
    const double reach = std::isfinite(target) ? flops_to_reach(target, at_first) : NAN;
    const std::string flops = std::isfinite(reach)
                                  ? (at_first ? "<= " : "") + ratio(reach, base_flops)
                                  : fmt::format("not reached (its final {:.4f})", number(sums[0], "final_val_loss"));
    md += fmt::format("| {} | {:.4f} | {} | {} | {} |", runs[i].variant, target, flops,
                      ratio(number(sums[0], "kv_cache_bytes_per_token"), number(s, "kv_cache_bytes_per_token")),
                      ratio(number(sums[0], "tokens_per_s"), number(s, "tokens_per_s")));
    for (const auto& c : contexts)
      md += " " + ratio(number(sums[0], "decode_tok_s_" + c), number(s, "decode_tok_s_" + c)) + " |";
    md += "\n";
  }
  md += fmt::format(
      "\nRatios are `{}` over the baseline: below 1 means `{}` needs less training compute or cache, above 1 that "
      "it decodes or trains faster.\n",
      subject, subject);

  json index = json::array();
  for (size_t i = 0; i < runs.size(); ++i)
    index.push_back({{"variant", runs[i].variant},
                     {"dir", fs::absolute(runs[i].dir).string()},
                     {"flops_per_step", number(sums[i], "train_flops_per_step")}});
  md += study_plot(out_dir, "loss_vs_flops", index, "val_loss_vs_flops", "validation loss against training FLOPs");
  return md;
}

std::string json_number(const json& j, const std::string& key, const char* format) {
  return j.contains(key) && j[key].is_number() ? fmt::format(fmt::runtime(format), j[key].get<double>()) : "n/a";
}

std::string grpo_sections(const std::vector<fs::path>& variant_dirs) {
  std::string md;
  for (const auto& d : variant_dirs) {
    std::ifstream in(d / run::kSummaryFile);
    if (!in) continue;
    const json s = json::parse(in, nullptr, false);
    if (s.is_discarded() || s.value("kind", "") != "grpo") continue;
    std::ifstream cin(d / run::kConfigFile);
    std::stringstream text;
    text << cin.rdbuf();
    md += grpo_section(s, config::parse_config(text.str(), (d / run::kConfigFile).string()));
  }
  return md;
}

}  // namespace ts::experiments
