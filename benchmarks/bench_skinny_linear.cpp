// skinny_linear: y = x W^T over the few rows of a decoding step, the op nn::Linear takes there,
// against torch's linear (the BLAS torch ships), one thread and default threads. Shapes: the
// projections of the MTP study's model (d_model 128, ffn 352, byte vocabulary 256) and of a
// d_model 512 model, at 1, 2, 3 (speculative verification with two drafts), 8, 16 and 24 rows
// (batch 8 verifying). The ratio table at the end is what kSkinnyLinearRows rests on.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "csrc/ops/skinny_linear.h"

namespace {

void run(benchmark::State& state, int64_t M, int64_t N, int64_t K, bool skinny) {
  torch::manual_seed(0);
  torch::NoGradGuard ng;
  const auto x = torch::randn({M, K});
  const auto w = torch::randn({N, K});
  for (auto _ : state) {
    auto y = skinny ? ts::ops::skinny_linear(x, w) : torch::nn::functional::linear(x, w);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.counters["flop_per_s"] = benchmark::Counter(2.0 * M * N * K * state.iterations(), benchmark::Counter::kIsRate);
}

void register_all() {
  struct Shape {
    int64_t n, k;
  };
  for (Shape s : {Shape{128, 128}, Shape{352, 128}, Shape{128, 352}, Shape{256, 128}, Shape{1536, 512}}) {
    for (int64_t M : {1, 2, 3, 8, 16, 24}) {
      const std::string args = "/M" + std::to_string(M) + "/N" + std::to_string(s.n) + "/K" + std::to_string(s.k);
      benchmark::RegisterBenchmark(("skinny_linear/tinyseek" + args).c_str(), [=](benchmark::State& st) {
        run(st, M, s.n, s.k, true);
      })->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("skinny_linear/base:torch" + args).c_str(), [=](benchmark::State& st) {
        run(st, M, s.n, s.k, false);
      })->Unit(benchmark::kMicrosecond);
    }
  }
}
const int registered = (register_all(), 0);

}  // namespace
