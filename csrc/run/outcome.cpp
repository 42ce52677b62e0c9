#include "csrc/run/outcome.h"

#include <cstdio>

#include "csrc/run/run_folder.h"

namespace ts::run {

const char* status_name(RunStatus s) {
  static const char* names[] = {"completed", "stopped", "interrupted", "nonfinite"};
  return names[static_cast<int>(s)];
}

int exit_status(RunStatus s) {
  if (s == RunStatus::kInterrupted) return 130;  // as a shell reports SIGINT
  return s == RunStatus::kNonFinite ? 3 : 0;
}

std::atomic<bool>& interrupt_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

void throw_if_interrupted() {
  if (interrupt_flag().load(std::memory_order_relaxed)) throw Interrupted();
}

RunOutcome measurements_interrupted(RunOutcome trained, const std::filesystem::path& run_dir) {
  trained.status = RunStatus::kInterrupted;
  trained.summary["status"] = status_name(trained.status);
  trained.summary["interrupted_during"] = "measurements";
  RunFolder(run_dir).write_summary(trained.summary);
  const std::string name = trained.summary.value("name", "?"), variant = trained.summary.value("variant", "?");
  std::fprintf(stderr, "%s/%s: interrupted during the measurements (training is complete; --resume measures again)\n",
               name.c_str(), variant.c_str());
  return trained;
}

}  // namespace ts::run
