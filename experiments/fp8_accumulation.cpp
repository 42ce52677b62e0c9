// The FP8 accumulation study (V3 §3.3): random GEMMs through torch.ops.tinyseek.fp8_gemm_nt, whose
// CPU emulator models the tensor core's limited accumulator, against the exact float64 product
// of the same FP8 operands, so only accumulation error is measured (not quantization error).
//
// Metrics over the m x n outputs of one GEMM (err = out - ref, ref the float64 product):
//   max_err_rel    max |err| / max |ref|          (the headline "maximum relative error")
//   median_rel     median of |err| / |ref|        (the typical output)
//   norm_rel       ||err||_2 / ||ref||_2
//   max_rel        max of |err| / |ref|           (dominated by outputs that nearly cancel to 0)
#include "experiments/fp8_accumulation.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "csrc/ops/fp8.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/checkpoint.h"
#include "csrc/util/fs.h"
#include "experiments/python_module.h"

namespace ts::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Accumulator {
  std::string label;  // "fp32" or "13 bits, align_truncate"
  int64_t bits;
  std::string model;
};

struct Row {
  Accumulator acc;
  int64_t promote;          // 0 = never
  std::vector<json> cells;  // one per K
};

std::vector<Accumulator> accumulators(const config::Fp8AccumulationConfig& c) {
  std::vector<Accumulator> out = {{"fp32 (23 bits)", 23, "truncate_sum"}};
  for (const char* m : {"align_truncate", "truncate_sum"})
    if (c.accum_model == "both" || c.accum_model == m)
      out.push_back({fmt::format("{} bits, {}", c.limited_mantissa_bits, m), c.limited_mantissa_bits, m});
  return out;
}

json measure(const at::Tensor& out, const at::Tensor& ref) {
  auto err = (out.to(torch::kDouble) - ref).abs();
  auto aref = ref.abs();
  auto rel = err / aref;
  return {{"max_err_rel", (err.max() / aref.max()).item<double>()},
          {"median_rel", rel.flatten().median().item<double>()},
          {"norm_rel", (err.norm() / ref.norm()).item<double>()},
          {"max_rel", rel.max().item<double>()}};
}

std::string pct(double v) { return fmt::format("{:.3g}%", 100 * v); }

std::string table(const std::vector<Row>& rows, const std::vector<int64_t>& ks, const char* key) {
  std::string md = "| accumulator | promotion |";
  for (auto k : ks) md += fmt::format(" K={} |", k);
  md += "\n|---|---|";
  for (size_t i = 0; i < ks.size(); ++i) md += "---:|";
  md += "\n";
  for (const auto& r : rows) {
    md += fmt::format("| {} | {} |", r.acc.label, r.promote ? fmt::format("every {}", r.promote) : "never");
    for (const auto& c : r.cells) md += fmt::format(" {} |", pct(c[key].get<double>()));
    md += "\n";
  }
  return md;
}

}  // namespace

void check_fp8_accumulation_config(const config::Config& cfg) {
  const auto& c = cfg.fp8_accumulation;
  if (c.k_max < c.k_min)
    throw config::InvalidKeys({"fp8_accumulation.k_max", "fp8_accumulation.k_min"},
                              fmt::format("expected >= k_min ({}), got {}", c.k_min, c.k_max));
}

run::RunOutcome run_fp8_accumulation(const config::Config& cfg, const std::string& variant, const fs::path& run_dir,
                                     bool /*resume: the study reruns whole*/) {
  check_fp8_accumulation_config(cfg);
  const auto& c = cfg.fp8_accumulation;
  const auto t_start = std::chrono::steady_clock::now();
  const run::RunFolder folder(run_dir);
  fs::create_directories(run_dir / run::kPlotsDir);
  folder.write_config(cfg);
  run::MetricsLog metrics(folder.metrics_path(), -1);

  std::vector<int64_t> ks;
  for (int64_t k = c.k_min; k <= c.k_max; k *= 2) ks.push_back(k);
  std::vector<Row> rows;
  for (const auto& a : accumulators(c))
    for (int64_t p : {int64_t{0}, c.promote_interval}) rows.push_back({a, p, {}});

  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  int64_t line = 0;
  for (int64_t K : ks) {
    auto sample = [&](int64_t rows_) {
      return c.distribution == "normal" ? torch::randn({rows_, K}) : torch::rand({rows_, K});
    };
    auto [qa, sa] = ops::fp8_quantize_tilewise(sample(c.m));
    auto [qb, sb] = ops::fp8_quantize_blockwise(sample(c.n));
    auto ref =
        ops::fp8_dequantize(qa, sa, 1, kern::kFp8GemmBlock)
            .to(torch::kDouble)
            .matmul(ops::fp8_dequantize(qb, sb, kern::kFp8GemmBlock, kern::kFp8GemmBlock).to(torch::kDouble).t());
    for (auto& r : rows) {
      const auto t0 = std::chrono::steady_clock::now();
      auto out = ops::fp8_gemm_nt(qa, sa, qb, sb, at::kFloat, r.promote, r.acc.bits, r.acc.model);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      json cell = measure(out, ref);
      cell.update({{"step", ++line},
                   {"K", K},
                   {"m", c.m},
                   {"n", c.n},
                   {"accumulator", r.acc.label},
                   {"accum_mantissa_bits", r.acc.bits},
                   {"accum_model", r.acc.bits == 23 ? "fp32" : r.acc.model},
                   {"promote_interval", r.promote},
                   {"distribution", c.distribution},
                   {"gemm_seconds", secs}});
      metrics.write(cell);
      fmt::print("{}/{}: K {:6d}  {:32s} promote {:4d}: max|err|/max|ref| {:>9s}  median rel {:>9s}  ({:.2f} s)\n",
                 cfg.name, variant, K, r.acc.label, r.promote, pct(cell["max_err_rel"].get<double>()),
                 pct(cell["median_rel"].get<double>()), secs);
      r.cells.push_back(std::move(cell));
      if (run::interrupt_flag().load()) {  // Ctrl-C: the measured lines stay; a rerun starts over
        fmt::print("{}/{}: interrupted after {} of {} GEMMs; run again to measure them all\n", cfg.name, variant, line,
                   static_cast<int64_t>(ks.size() * rows.size()));
        run::RunOutcome out;
        out.status = run::RunStatus::kInterrupted;
        out.summary = {{"name", cfg.name},
                       {"variant", variant},
                       {"kind", cfg.kind},
                       {"status", run::status_name(out.status)},
                       {"steps", line}};
        folder.write_summary(out.summary);
        return out;
      }
    }
  }

  // The table, the plot (Python helper), and the section `tinyseek report` appends.
  const std::string dist = c.distribution == "normal" ? "N(0, 1)" : "U(0, 1)";
  std::string md = fmt::format(
      "## FP8 accumulation error ({}: {} x K times K x {}, entries {})\n\n"
      "Error of the FP8 GEMM emulator against the exact float64 product of the same FP8 operands "
      "(1 x 128 tiles for A, 128 x 128 blocks for B), so only accumulation error is measured. "
      "`align_truncate` is V3's description of the H800 tensor core (addends aligned to the larger exponent "
      "and truncated); `truncate_sum` truncates the rounded running sum, a biased upper bound.\n\n"
      "max |err| / max |ref| over the outputs:\n\n{}\nmedian over outputs of |err| / |ref|:\n\n{}\n"
      "||err|| / ||ref|| (Frobenius):\n\n{}\n![accumulation error]({{{{dir}}}}/plots/fp8_accumulation.png)\n",
      variant, c.m, c.n, dist, table(rows, ks, "max_err_rel"), table(rows, ks, "median_rel"),
      table(rows, ks, "norm_rel"));
  if (run_python_module("study_plots",
                        {"fp8_accumulation", folder.metrics_path().string(),
                         (run_dir / run::kPlotsDir / "fp8_accumulation.png").string()},
                        run_dir / run::kPlotsDir / "plot.log") != 0)
    md += "\n(plot unavailable: see plots/plot.log)\n";
  util::atomic_write(run_dir / "report_section.md", md);  // "{{dir}}": filled in by `tinyseek report`
  std::string standalone = md;
  for (size_t pos; (pos = standalone.find("{{dir}}/")) != std::string::npos;) standalone.erase(pos, 8);
  util::atomic_write(run_dir / "fp8_accumulation.md", standalone);

  json results = json::array();
  for (const auto& r : rows)
    results.push_back({{"accumulator", r.acc.label}, {"promote_interval", r.promote}, {"cells", r.cells}});
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  run::RunOutcome out;
  out.summary = {{"name", cfg.name},
                 {"variant", variant},
                 {"kind", cfg.kind},
                 {"status", "completed"},
                 {"steps", line},
                 {"wall_seconds_this_invocation", wall},
                 {"metric_definitions",
                  {{"max_err_rel", "max |out - ref| / max |ref| over the m x n outputs"},
                   {"median_rel", "median over outputs of |out - ref| / |ref|"},
                   {"norm_rel", "||out - ref||_2 / ||ref||_2"},
                   {"max_rel", "max over outputs of |out - ref| / |ref|"}}},
                 {"results", results}};
  folder.write_summary(out.summary);
  return out;
}

}  // namespace ts::experiments
