// Helpers shared by the benchmark files.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <string>
#include <vector>

#include "csrc/nn/generate.h"

namespace ts::bench {

// Registers a benchmark that times itself (state.SetIterationTime) over a fixed number of
// iterations, reported in milliseconds: the end-to-end cases whose runs take seconds.
template <class F>
void register_timed(const std::string& name, F&& f, int iterations) {
  benchmark::RegisterBenchmark(name.c_str(), std::forward<F>(f))
      ->Unit(benchmark::kMillisecond)
      ->UseManualTime()
      ->Iterations(iterations);
}

// nn::generate of `requests` once untimed, then once per iteration, each timed alone; returns the
// last iteration's result.
inline nn::GenerateResult time_generate(benchmark::State& state, nn::Transformer& model,
                                        const std::vector<nn::GenerateRequest>& requests,
                                        const nn::GenerateOptions& o) {
  nn::GenerateResult r = nn::generate(model, requests, o);  // warm-up
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    r = nn::generate(model, requests, o);
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return r;
}

}  // namespace ts::bench
