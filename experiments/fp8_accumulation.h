// The FP8 accumulation study (config kind: fp8_accumulation): DeepSeek-V3 §3.3's measurement of
// how a limited-precision tensor-core accumulator hurts an FP8 GEMM, and how promoting partial
// sums to fp32 every N_C = 128 fixes it, reproduced on the CPU emulator.
#pragma once

#include <filesystem>
#include <string>

#include "csrc/config/config.h"
#include "csrc/run/outcome.h"

namespace ts::experiments {

// Writes into run_dir: config.resolved.yaml, metrics.jsonl (one line per GEMM configuration),
// summary.json, fp8_accumulation.md (the table), plots/fp8_accumulation.png and
// report_section.md (which `tinyseek report` appends to the comparison report).
// fp8_accumulation.k_max >= k_min. Throws config::InvalidKeys.
void check_fp8_accumulation_config(const config::Config& cfg);

run::RunOutcome run_fp8_accumulation(const config::Config& cfg, const std::string& variant,
                                     const std::filesystem::path& run_dir, bool resume);

}  // namespace ts::experiments
