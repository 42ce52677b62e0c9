// tinyseek_bench: Google Benchmark with a closing table of speedups against each baseline.
//
// Naming convention for every benchmark: "<group>/<impl>/<args...>". The impl whose name starts
// with "base:" is the group's baseline (e.g. "rms_norm_fwd/base:torch/4096/512"); every other impl
// with the same group and args gets a line "speedup = baseline time / impl time", both measured in
// this run.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace {

struct Key {
  std::string group, args;
  bool operator<(const Key& o) const { return std::tie(group, args) < std::tie(o.group, o.args); }
};

// Google Benchmark appends how a case ran ("/iterations:2", "/manual_time", ...) to its name: an
// impl and its baseline may run differently and still compare the same work.
std::string without_run_options(const std::string& args) {
  std::string out;
  size_t start = 0;
  while (start <= args.size()) {
    const size_t end = std::min(args.find('/', start), args.size());
    const std::string part = args.substr(start, end - start);
    const bool option = part == "manual_time" || part == "real_time" || part.starts_with("iterations:") ||
                        part.starts_with("repeats:") || part.starts_with("threads:") || part.starts_with("min_time:");
    if (!option && !part.empty()) out += (out.empty() ? "" : "/") + part;
    start = end + 1;
  }
  return out;
}

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      const std::string name = r.benchmark_name();
      auto s1 = name.find('/');
      if (s1 == std::string::npos) continue;
      auto s2 = name.find('/', s1 + 1);
      const std::string group = name.substr(0, s1);
      const std::string impl = name.substr(s1 + 1, s2 == std::string::npos ? std::string::npos : s2 - s1 - 1);
      const std::string args = s2 == std::string::npos ? "" : without_run_options(name.substr(s2 + 1));
      times_[{group, args}][impl] = r.GetAdjustedRealTime();
    }
  }
  void PrintRatios() const {
    std::printf("\n%-28s %-24s %-22s %12s %12s %9s\n", "group", "args", "impl", "impl time", "base time", "speedup");
    for (const auto& [key, impls] : times_) {
      const std::pair<const std::string, double>* base = nullptr;
      for (const auto& kv : impls)
        if (kv.first.rfind("base:", 0) == 0) base = &kv;
      if (!base) continue;
      for (const auto& [impl, t] : impls) {
        if (&impl == &base->first) continue;
        std::printf("%-28s %-24s %-22s %12.3g %12.3g %8.2fx  (vs %s)\n", key.group.c_str(), key.args.c_str(),
                    impl.c_str(), t, base->second, base->second / t, base->first.c_str() + 5);
      }
    }
  }

 private:
  std::map<Key, std::map<std::string, double>> times_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintRatios();
  benchmark::Shutdown();
  return 0;
}
