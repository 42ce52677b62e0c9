// decode_attention: the queries of a KV-cached step over the cache, the op attend_over_cache takes
// on the CPU, against torch's scaled_dot_product_attention under the equivalent boolean mask (what
// it took before). Shapes: the MTP study's model (4 heads of 32) and a GQA one (8 query heads on 2
// kv heads of 64), 1 and 3 queries per sequence (plain and speculative verification), batch 1 and
// 8, context 112; k and v are views of a larger pool, as the cache passes them.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cmath>

#include "csrc/ops/decode_attention.h"

namespace {

void run(benchmark::State& state, int64_t B, int64_t S, int64_t H, int64_t Hk, int64_t D, bool ours) {
  constexpr int64_t L = 112;
  torch::manual_seed(0);
  torch::NoGradGuard ng;
  const auto q = torch::randn({B, S, H, D});
  const auto k = torch::randn({B, 2 * L, Hk, D}).narrow(1, 0, L);
  const auto v = torch::randn({B, 2 * L, Hk, D}).narrow(1, 0, L);
  const auto last = (torch::arange(L - S, L, torch::kInt64)).expand({B, S}).contiguous();
  const auto mask = (torch::arange(L, torch::kInt64).view({1, 1, L}) <= last.unsqueeze(-1)).unsqueeze(1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (auto _ : state) {
    auto o = ours ? ts::ops::decode_attention(q, k, v, last, scale)
                  : at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, 0.0,
                                                     false, scale, Hk != H)
                        .transpose(1, 2);
    benchmark::DoNotOptimize(o.data_ptr());
  }
}

void register_all() {
  struct Shape {
    int64_t H, Hk, D;
  };
  for (Shape s : {Shape{4, 4, 32}, Shape{8, 2, 64}})
    for (int64_t B : {1, 8})
      for (int64_t S : {1, 3}) {
        const std::string args = "/B" + std::to_string(B) + "/S" + std::to_string(S) + "/H" + std::to_string(s.H) +
                                 "/Hk" + std::to_string(s.Hk) + "/D" + std::to_string(s.D) + "/ctx112";
        benchmark::RegisterBenchmark(("decode_attention/tinyseek" + args).c_str(), [=](benchmark::State& st) {
          run(st, B, S, s.H, s.Hk, s.D, true);
        })->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("decode_attention/base:torch_sdpa" + args).c_str(), [=](benchmark::State& st) {
          run(st, B, S, s.H, s.Hk, s.D, false);
        })->Unit(benchmark::kMicrosecond);
      }
}
const int registered = (register_all(), 0);

}  // namespace
