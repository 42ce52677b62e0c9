#include "csrc/train/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace ts::train {

namespace {
std::string hms(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  auto t = static_cast<int64_t>(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                   : fmt::format("{}:{:02}", t / 60, t % 60);
}
}  // namespace

Progress::Progress(std::string label, int64_t total, int64_t first, bool quiet)
    : label_(std::move(label)), total_(total), first_(first), tty_(::isatty(STDERR_FILENO)), quiet_(quiet) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

void Progress::update(int64_t step, double loss, double tps, int64_t log_every, const std::string& note) {
  if (quiet_) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double eta = step > first_ ? elapsed / (step - first_) * (total_ - step) : -1;
  if (tty_) {
    if (step < total_ && std::chrono::duration<double>(now - last_draw_).count() < 0.1) return;
    last_draw_ = now;
    const int width = 24;
    const int fill = static_cast<int>(width * step / std::max<int64_t>(total_, 1));
    std::string bar(fill, '#');
    bar.append(width - fill, '.');
    std::fprintf(stderr, "\r\033[K%s [%s] step %lld/%lld  loss %.4f%s%s  %.0f tok/s  ETA %s", label_.c_str(),
                 bar.c_str(), static_cast<long long>(step), static_cast<long long>(total_), loss,
                 note.empty() ? "" : "  ", note.c_str(), tps, hms(eta).c_str());
    std::fflush(stderr);
    bar_drawn_ = true;
  } else if (step % log_every == 0 || step == total_) {
    std::fprintf(stdout, "%s step %lld/%lld loss %.4f%s%s tok/s %.0f eta %s\n", label_.c_str(),
                 static_cast<long long>(step), static_cast<long long>(total_), loss, note.empty() ? "" : " ",
                 note.c_str(), tps, hms(eta).c_str());
    std::fflush(stdout);
  }
}

void Progress::message(const std::string& line) {
  if (quiet_) return;
  if (tty_ && bar_drawn_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

void Progress::finish() {
  if (tty_ && bar_drawn_) std::fprintf(stderr, "\n");
}

}  // namespace ts::train
