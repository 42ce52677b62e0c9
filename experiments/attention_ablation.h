// The attention ablation (config kind: attention_ablation): trains the variant exactly like
// `pretrain`, then measures its decode throughput with a KV cache at several context lengths
// (config section decode_bench) and adds the numbers, with the cache's bytes per token, to
// summary.json (listed in its report_columns, so `tinyseek report` shows them).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "csrc/config/config.h"
#include "csrc/run/outcome.h"

namespace ts::experiments {

run::RunOutcome run_attention_ablation(const config::Config& cfg, const std::string& variant,
                                       const std::filesystem::path& run_dir, bool resume);

// The decode measurement alone (a freshly initialized model of cfg: speed does not depend on the
// weights). Keys: kv_cache_bytes_per_token (measured on the cache object) and
// decode_tok_s_<context> for every context (batch_size * steps tokens over the fastest of three
// timed blocks of decode_bench.steps steps); report_columns lists them in order.
nlohmann::json measure_decode(const config::Config& cfg);

// The decode benchmark's checks (decode_bench.*), beside pretraining's. Throws config::InvalidKeys.
void check_attention_ablation_config(const config::Config& cfg);

}  // namespace ts::experiments
