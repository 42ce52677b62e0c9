#include "experiments/cost_study.h"

#include <cstdio>

#include "csrc/nn/cost.h"
#include "csrc/run/outcome.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/trainer.h"
#include "experiments/attention_ablation.h"

namespace ts::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

void check_cost_study_config(const config::Config& cfg) { check_attention_ablation_config(cfg); }

json counted_costs(const config::Config& cfg) {
  const auto c = nn::model_cost(cfg);
  const int64_t tokens_per_step = cfg.train.batch_size * cfg.data.seq_len;
  json j = {{"total_parameters", c.total_parameters},
            {"active_parameters", c.active_parameters},
            {"mtp_parameters", c.mtp_parameters},
            {"kv_values_per_token", c.kv_values_per_token},
            {"forward_flops_per_token", c.forward_flops_per_token},
            {"mtp_forward_flops_per_token", c.mtp_forward_flops_per_token},
            {"train_flops_per_token", c.train_flops_per_token},
            {"train_flops_per_step", c.train_flops_per_token * static_cast<double>(tokens_per_step)},
            {"train_flops_total",
             c.train_flops_per_token * static_cast<double>(tokens_per_step) * static_cast<double>(cfg.train.steps)}};
  const auto& d = cfg.decode_bench;
  for (int64_t ctx = d.context_min; ctx <= d.context_max; ctx *= d.context_factor)
    j["decode_flops_per_token_" + std::to_string(ctx)] = nn::decode_flops_per_token(cfg, ctx);
  return j;
}

run::RunOutcome run_cost_study(const config::Config& cfg, const std::string& variant, const fs::path& run_dir,
                               bool resume) {
  check_cost_study_config(cfg);
  auto outcome = train::train_variant(cfg, variant, run_dir, resume);
  if (outcome.status != run::RunStatus::kCompleted) return outcome;
  const auto& d = cfg.decode_bench;
  std::fprintf(stderr, "%s/%s: decode benchmark (batch %lld, contexts %lld..%lld)\n", cfg.name.c_str(), variant.c_str(),
               static_cast<long long>(d.batch_size), static_cast<long long>(d.context_min),
               static_cast<long long>(d.context_max));
  json m;
  try {
    m = measure_decode(cfg);  // kv_cache_bytes_per_token: measured on the decoder's cache
  } catch (const run::Interrupted&) {
    return run::measurements_interrupted(std::move(outcome), run_dir);
  }
  outcome.summary.update(counted_costs(cfg));
  outcome.summary.update(m);
  const int64_t kv_bytes = m["kv_cache_bytes_per_token"].get<int64_t>();
  for (int64_t ctx = d.context_min; ctx <= d.context_max; ctx *= d.context_factor)
    outcome.summary["kv_cache_bytes_" + std::to_string(ctx)] = kv_bytes * ctx;  // one sequence
  json columns = json::array({"active_parameters", "train_flops_per_token"});
  for (const auto& c : m["report_columns"]) columns.push_back(c);
  outcome.summary["report_columns"] = columns;
  run::RunFolder(run_dir).write_summary(outcome.summary);
  return outcome;
}

}  // namespace ts::experiments
