// How a run of one variant ended, and the Ctrl-C flag every loop watches.
#pragma once

#include <atomic>
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

}  // namespace ts::run
