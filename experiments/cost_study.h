// The cost study (config kind: cost_study; configs/tiny_v3.yaml, configs/cost_study.yaml): each
// variant trains like `pretrain`, then its costs go into summary.json: parameters (total and
// active per token), KV-cache bytes per token and per sequence at each decode context, training
// FLOPs per token counted from the shapes (csrc/nn/cost.h), and decoding tokens/s at each context
// (decode_bench, as the attention ablation measures it). The report compares the first variant
// (the model under study) with every other one (cost_section in report_sections.h).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "csrc/config/config.h"
#include "csrc/run/outcome.h"

namespace ts::experiments {

run::RunOutcome run_cost_study(const config::Config& cfg, const std::string& variant,
                               const std::filesystem::path& run_dir, bool resume);

void check_cost_study_config(const config::Config& cfg);

// The cost numbers counted from the config alone (summary keys; see the file comment).
nlohmann::json counted_costs(const config::Config& cfg);

}  // namespace ts::experiments
