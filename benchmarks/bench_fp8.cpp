// FP8 ops: the quantizers against the torch composition they replace (view, amax, div, clamp,
// to(float8)) and against a memcpy of the input's bytes (the bandwidth floor); the CPU GEMM
// emulator against an fp32 torch matmul of the same shape (what exact FP8 emulation costs).
// Counters: bytes_per_s (bytes read + written by the op), flop_per_s for GEMMs (2 M N K).
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cstring>
#include <string>
#include <vector>

#include "csrc/ops/fp8.h"
#include "kernels/common.h"

namespace {

constexpr int64_t kG = 128;

torch::Tensor composed_tilewise(const torch::Tensor& x) {
  auto t = x.view({x.size(0), -1, kG});
  auto scale = t.abs().amax(-1, true).clamp_min(1e-4) / 448.0;
  auto q = (t / scale).clamp(-448, 448).to(torch::kFloat8_e4m3fn);
  return q.view_as(x);
}

torch::Tensor composed_blockwise(const torch::Tensor& w) {
  const int64_t N = w.size(0), K = w.size(1);
  auto t = w.view({N / kG, kG, K / kG, kG});
  auto scale = t.abs().amax({1, 3}, true).clamp_min(1e-4) / 448.0;
  return (t / scale).clamp(-448, 448).to(torch::kFloat8_e4m3fn).view_as(w);
}

void set_bytes(benchmark::State& state, double bytes) {
  state.counters["bytes_per_s"] = benchmark::Counter(bytes * state.iterations(), benchmark::Counter::kIsRate);
}

void quant_tilewise(benchmark::State& state, int64_t M, int64_t K, int impl) {
  torch::manual_seed(0);
  auto x = torch::randn({M, K});
  std::vector<char> dst(x.nbytes());
  for (auto _ : state) {
    if (impl == 0) {
      auto [q, s] = ts::ops::fp8_quantize_tilewise(x);
      benchmark::DoNotOptimize(q.data_ptr());
    } else if (impl == 1) {
      auto q = composed_tilewise(x);
      benchmark::DoNotOptimize(q.data_ptr());
    } else {  // memcpy of x's bytes, split over the same threads as the kernel
      const int64_t chunks = 4 * ts::kern::num_threads(), n = static_cast<int64_t>(x.nbytes());
      const char* src = static_cast<const char*>(x.const_data_ptr());
      ts::kern::parallel_for(chunks, 0, [&](int64_t c) {
        const int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
        std::memcpy(dst.data() + b, src + b, e - b);
      });
      benchmark::DoNotOptimize(dst.data());
    }
  }
  // quantize: reads 4 MK, writes MK codes + 4 MK/128 scales; memcpy: reads and writes 4 MK.
  set_bytes(state, impl == 2 ? 8.0 * M * K : 5.0 * M * K + 4.0 * M * K / kG);
}

void quant_blockwise(benchmark::State& state, int64_t N, int64_t K, bool ours) {
  torch::manual_seed(0);
  auto w = torch::randn({N, K});
  for (auto _ : state) {
    auto q = ours ? std::get<0>(ts::ops::fp8_quantize_blockwise(w)) : composed_blockwise(w);
    benchmark::DoNotOptimize(q.data_ptr());
  }
  set_bytes(state, 5.0 * N * K);
}

// impl: -1 = fp32 torch matmul (x W^T); otherwise the emulator with (bits, P, model).
struct GemmImpl {
  const char* name;
  int64_t bits, promote;
  const char* model;
};

void gemm(benchmark::State& state, int64_t M, int64_t N, int64_t K, const GemmImpl& impl) {
  torch::manual_seed(0);
  auto x = torch::randn({M, K}), w = torch::randn({N, K});
  auto [qa, sa] = ts::ops::fp8_quantize_tilewise(x);
  auto [qb, sb] = ts::ops::fp8_quantize_blockwise(w);
  for (auto _ : state) {
    auto out = impl.bits < 0 ? torch::matmul(x, w.t())
                             : ts::ops::fp8_gemm_nt(qa, sa, qb, sb, at::kFloat, impl.promote, impl.bits, impl.model);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["flop_per_s"] = benchmark::Counter(2.0 * M * N * K * state.iterations(), benchmark::Counter::kIsRate);
}

void register_all() {
  for (auto [M, K] : {std::pair<int64_t, int64_t>{4096, 2048}, {1024, 7168}}) {
    const std::string args = fmt::format("/{}/{}", M, K);
    const char* names[] = {"tinyseek", "base:torch", "base:memcpy"};
    for (int impl : {0, 1}) {
      benchmark::RegisterBenchmark(("fp8_quant_tilewise/" + std::string(names[impl]) + args).c_str(),
                                   [=](benchmark::State& s) { quant_tilewise(s, M, K, impl); })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
    // The same kernel in its own group, against the bandwidth floor.
    for (int impl : {0, 2}) {
      benchmark::RegisterBenchmark(("fp8_quant_vs_memcpy/" + std::string(names[impl]) + args).c_str(),
                                   [=](benchmark::State& s) { quant_tilewise(s, M, K, impl); })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
    for (bool ours : {true, false})
      benchmark::RegisterBenchmark(
          ("fp8_quant_blockwise/" + std::string(ours ? "tinyseek" : "base:torch") + args).c_str(),
          [=](benchmark::State& s) { quant_blockwise(s, M, K, ours); })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
  }
  static const GemmImpl impls[] = {{"base:torch_fp32", -1, 0, ""},
                                   {"emul_fp32_P128", 23, 128, "truncate_sum"},
                                   {"emul_b13_align_P128", 13, 128, "align_truncate"},
                                   {"emul_b13_align_P0", 13, 0, "align_truncate"},
                                   {"emul_b13_trunc_P128", 13, 128, "truncate_sum"}};
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{512, 512, 512}, {1024, 128, 352}}) {
    const std::string args = fmt::format("/{}/{}/{}", M, N, K);
    for (const auto& impl : impls)
      benchmark::RegisterBenchmark(("fp8_gemm/" + std::string(impl.name) + args).c_str(),
                                   [=, &impl](benchmark::State& s) { gemm(s, M, N, K, impl); })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
  }
}
const int registered = (register_all(), 0);

}  // namespace
