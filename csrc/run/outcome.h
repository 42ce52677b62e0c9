// How a run of one variant ended, and the Ctrl-C flag every loop watches.
#pragma once

#include <atomic>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace ts::run {

enum class RunStatus { kCompleted, kStopped /* train.stop_at reached */, kInterrupted, kNonFinite };

// "completed", "stopped", "interrupted", "nonfinite": what summary.json says.
const char* status_name(RunStatus s);

struct RunOutcome {
  RunStatus status = RunStatus::kCompleted;
  nlohmann::json summary;  // what summary.json holds
};

// Set by the CLI's SIGINT handler; every loop checks it between steps.
std::atomic<bool>& interrupt_flag();

// The CLI's exit status for an outcome: 0, 3 (non-finite), 130 (interrupted).
int exit_status(RunStatus s);

// A study's measurement loop (decode timing after training, say) calls this every iteration, so
// a Ctrl-C stops it within one iteration; the kind catches Interrupted and returns
// measurements_interrupted(...).
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};
void throw_if_interrupted();

// The outcome of a study stopped during its measurements: the training's summary with status
// "interrupted" (so that --resume measures again) and none of the partial measurements, written
// atomically to run_dir's summary.json; the caller's report is not written.
RunOutcome measurements_interrupted(RunOutcome trained, const std::filesystem::path& run_dir);

}  // namespace ts::run
