// Optional sections of `tinyseek report` beyond the summary table.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ts::experiments {

// Relative loss error of every variant against the first one (the baseline), from metrics.jsonl:
// (L_variant / L_baseline - 1) per logged training step (the variants of one config see the same
// batches), summarized as the mean over the last 10% of steps, the largest |.| of 10-step means
// along the curve, and the final validation loss; plus plots/rel_loss_error.png. Only the variants of
// the first one's kind take part; empty unless at least two of them logged a training loss.
std::string loss_error_section(const std::vector<std::filesystem::path>& variant_dirs,
                               const std::filesystem::path& out_dir);

// The report_section.md a driver left in a variant folder (e.g. the FP8 accumulation study's
// tables), with "{{dir}}" replaced by that folder's path relative to out_dir.
std::string driver_sections(const std::vector<std::filesystem::path>& variant_dirs,
                            const std::filesystem::path& out_dir);

// For every GRPO variant (kind grpo in summary.json): its settings (config.resolved.yaml), the
// held-out pass@1, pass@k, format rate and length before and after RL, and the training curves'
// first and last 10% of steps (the summary's *_first10 / *_last10).
std::string grpo_sections(const std::vector<std::filesystem::path>& variant_dirs);

// The cost study's comparison (variants of kind cost_study, the first one the model under study):
// per variant its parameters, KV bytes per token, training FLOPs per token, validation loss and
// speeds; against each other variant, the training FLOPs the first one needs to reach that
// variant's final validation loss over that variant's whole training (interpolated in log FLOPs
// between evaluations), the KV-cache ratio and the decode-throughput ratio at every context; plus
// plots/val_loss_vs_flops.png. Empty unless at least two such variants ran.
std::string cost_section(const std::vector<std::filesystem::path>& variant_dirs, const std::filesystem::path& out_dir);

// j[key] formatted with `format`, or "n/a" when it is missing or not a number.
std::string json_number(const nlohmann::json& j, const std::string& key, const char* format = "{:.3f}");

}  // namespace ts::experiments
