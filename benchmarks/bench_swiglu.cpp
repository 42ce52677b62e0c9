// swiglu: the fused op against the torch composition silu(gate) * up, forward and
// forward+backward, at the quickstart model's FFN shape (16 x 128 tokens, 352 wide) and a wider
// one, gate and up as the halves of one [R, 2F] buffer as the MoE experts hold them (swiglu_packed).
// Counter: bytes/s; tinyseek_bench prints the speedup table at the end.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "csrc/ops/swiglu.h"

namespace {

void run(benchmark::State& state, int64_t R, int64_t F, bool fused, bool backward) {
  torch::manual_seed(0);
  auto gu = (torch::randn({R, 2 * F}) * 3).requires_grad_(backward);
  auto g = torch::randn({R, F});
  for (auto _ : state) {
    auto h = fused ? ts::ops::swiglu_packed(gu) : torch::silu(gu.narrow(1, 0, F)) * gu.narrow(1, F, F);
    if (backward) {
      h.backward(g);
      gu.mutable_grad().reset();
    }
    benchmark::DoNotOptimize(h.data_ptr());
  }
  const double bytes = (backward ? 8.0 : 3.0) * R * F * sizeof(float);
  state.counters["bytes_per_s"] = benchmark::Counter(bytes * state.iterations(), benchmark::Counter::kIsRate);
}

void register_all() {
  for (auto [R, F] : {std::pair<int64_t, int64_t>{2048, 352}, {4096, 1408}}) {
    for (bool bwd : {false, true}) {
      const std::string group = bwd ? "swiglu_fwd_bwd" : "swiglu_fwd";
      const std::string args = fmt::format("/{}/{}", R, F);
      benchmark::RegisterBenchmark((group + "/tinyseek" + args).c_str(), [=](benchmark::State& s) {
        run(s, R, F, true, bwd);
      })->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark((group + "/base:torch" + args).c_str(), [=](benchmark::State& s) {
        run(s, R, F, false, bwd);
      })->Unit(benchmark::kMicrosecond);
    }
  }
}
const int registered = (register_all(), 0);

}  // namespace
