// rms_norm: the fused op against the torch composition x * rsqrt(mean(x^2) + eps) * w, forward
// and forward+backward. Counter: bytes/s; tinyseek_bench prints the speedup table at the end.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "csrc/ops/rms_norm.h"

namespace {

torch::Tensor composed(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * w;
}

void run(benchmark::State& state, int64_t R, int64_t D, bool fused, bool backward) {
  torch::manual_seed(0);
  auto x = torch::randn({R, D}).requires_grad_(backward);
  auto w = torch::randn({D}).requires_grad_(backward);
  auto g = torch::randn({R, D});
  for (auto _ : state) {
    auto y = fused ? ts::ops::rms_norm(x, w, 1e-6) : composed(x, w, 1e-6);
    if (backward) y.backward(g);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  const double bytes = (backward ? 5.0 : 2.0) * R * D * sizeof(float);
  state.counters["bytes_per_s"] = benchmark::Counter(bytes * state.iterations(), benchmark::Counter::kIsRate);
}

void register_all() {
  for (auto [R, D] : {std::pair<int64_t, int64_t>{4096, 512}, {2048, 2048}}) {
    for (bool bwd : {false, true}) {
      const std::string group = bwd ? "rms_norm_fwd_bwd" : "rms_norm_fwd";
      const std::string args = fmt::format("/{}/{}", R, D);
      benchmark::RegisterBenchmark((group + "/tinyseek" + args).c_str(), [=](benchmark::State& s) {
        run(s, R, D, true, bwd);
      })->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark((group + "/base:torch" + args).c_str(), [=](benchmark::State& s) {
        run(s, R, D, false, bwd);
      })->Unit(benchmark::kMicrosecond);
    }
  }
}
const int registered = (register_all(), 0);

}  // namespace
