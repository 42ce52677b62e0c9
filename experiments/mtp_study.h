// The multi-token prediction study (config kind: mtp): trains the variant exactly like
// `pretrain` (model.mtp.depth 0 for the baseline), then decodes held-out text greedily, plain and,
// when the model has MTP modules, speculatively with them (csrc/nn/generate.h), at
// spec_bench.batch_small and batch_large. summary.json gets the acceptance of each draft depth,
// the tokens per verify step and the decoding speed-up, all measured in this process, and lists
// them in report_columns.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "csrc/config/config.h"
#include "csrc/nn/transformer.h"
#include "csrc/run/outcome.h"

namespace ts::experiments {

run::RunOutcome run_mtp_study(const config::Config& cfg, const std::string& variant,
                              const std::filesystem::path& run_dir, bool resume);

// The decoding measurement alone, on `model` (eval mode is set) and the validation split of cfg's data.
nlohmann::json measure_speculative(const config::Config& cfg, nn::Transformer& model);

// Pretraining's checks and spec_bench's (prompts fit the context, batch_large divides prompts).
// Throws config::InvalidKeys.
void check_mtp_study_config(const config::Config& cfg);

}  // namespace ts::experiments
