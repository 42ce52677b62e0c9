// Progress display: a redrawn bar on a terminal, plain log lines otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ts::train {

class Progress {
 public:
  // quiet: prints nothing (the processes of a job other than the lead).
  Progress(std::string label, int64_t total_steps, int64_t first_step, bool quiet = false);
  // Called after every step; prints according to the mode (bar: throttled redraw; log: every log_every).
  void update(int64_t step, double loss, double tokens_per_s, int64_t log_every);
  void message(const std::string& line);  // a line that must not be overwritten (eval, warnings)
  void finish();

 private:
  std::string label_;
  int64_t total_, first_;
  bool tty_, quiet_;
  bool bar_drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace ts::train
