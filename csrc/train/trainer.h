// The training loop shared by every pretraining experiment: AdamW with warmup + cosine, gradient
// clipping, periodic evaluation, metrics.jsonl, atomic checkpoints, bit-exact resume, NaN/Inf
// detection, and a clean stop on Ctrl-C.
#pragma once

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "csrc/config/config.h"

namespace ts::train {

// Set by the CLI's SIGINT handler; the loop checks it after each step.
std::atomic<bool>& interrupt_flag();

enum class RunStatus { kCompleted, kStopped /* stop_at reached */, kInterrupted, kNonFinite };

struct RunOutcome {
  RunStatus status = RunStatus::kCompleted;
  nlohmann::json summary;  // what summary.json holds
};

// Learning rate at `step` (0-based): linear warmup to lr, then cosine to lr * min_lr_ratio.
double lr_at(const config::TrainConfig& t, int64_t step);

// Trains one variant into `run_dir` (config.resolved.yaml, metrics.jsonl, summary.json, checkpoints/).
// With resume, continues from the latest checkpoint there (exactly: same batches, same state).
RunOutcome train_variant(const config::Config& cfg, const std::string& variant, const std::filesystem::path& run_dir,
                         bool resume);

}  // namespace ts::train
