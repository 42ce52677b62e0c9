#include "csrc/run/outcome.h"

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

}  // namespace ts::run
