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
  // Called after every step; prints according to the mode (bar: throttled redraw; log: every
  // log_every). note: more of the step, shown after the loss ("reward 0.41 acc 0.30", say).
  void update(int64_t step, double loss, double tokens_per_s, int64_t log_every, const std::string& note = "");
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
