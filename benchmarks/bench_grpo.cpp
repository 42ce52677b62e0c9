// GRPO step: where the time of one step of kind grpo goes, and what the KV cache does for rollouts.
//
//   grpo_rollout/tinyseek_cache/...     P x G sampled completions through nn::generate (paged KV
//                                       cache), as GrpoObjective samples them
//   grpo_rollout/base:recompute/...     the same sampling without a cache: every new token runs the
//                                       model's forward over the whole batch's context so far
//   grpo_step/tinyseek/...              one whole step of GrpoObjective (rollout, rewards,
//                                       advantages, log-probs, grpo_loss, backward) plus AdamW:
//                                       counters rollout and training tokens/s, and the share of the
//                                       step spent sampling
//
// The model is configs/r1_zero_arithmetic.yaml's (d_model 128, 4 layers, MHA, context 128) with
// random weights, so completions never stop early: every rollout is the worst case of
// max_completion_length (96) tokens after a 17- or 18-byte arithmetic prompt, 8 prompts x 8 samples.
//
// The recompute baseline's cost grows with the context; it times every 8th forward and counts each
// for the 8 tokens from its own context on (an underestimate of its time: the printed speedup errs
// toward the baseline).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <array>
#include <chrono>

#include "benchmarks/bench_util.h"
#include "csrc/nn/generate.h"
#include "csrc/rl/grpo.h"
#include "csrc/rl/tasks.h"
#include "csrc/train/optim.h"

namespace {

constexpr int64_t kStride = 8;

ts::config::Config grpo_config(int64_t P, int64_t G, int64_t completion) {
  return ts::config::parse_config(
      "kind: grpo\ndata: {source: task, seq_len: 128}\n"
      "task: {name: arithmetic, ops: '+-', digits_min: 3, digits_max: 3}\n"
      "model: {d_model: 128, n_layers: 4, n_heads: 4, ffn_hidden: 352, attention: {kind: mha}}\n"
      "train: {threads: 0}\n"
      "grpo: {init_from: bench, prompts_per_step: " +
          std::to_string(P) + ", group_size: " + std::to_string(G) +
          ", max_completion_length: " + std::to_string(completion) + "}\n",
      "bench_grpo");
}

std::vector<ts::nn::GenerateRequest> requests(const ts::config::Config& cfg) {
  const ts::rl::Task task(cfg.task);
  const int64_t P = cfg.grpo.prompts_per_step, G = cfg.grpo.group_size;
  const auto problems = task.problems(ts::rl::Split::kTrain, ts::rl::Level::kRl, 0, P);
  std::vector<ts::nn::GenerateRequest> out;
  for (int64_t i = 0; i < P * G; ++i) out.push_back({ts::nn::bytes_to_tokens(problems[i / G].prompt), uint64_t(i)});
  return out;
}

void rollout_cached(benchmark::State& state, int64_t P, int64_t G, int64_t L) {
  const auto cfg = grpo_config(P, G, L);
  torch::manual_seed(0);
  ts::nn::Transformer model(cfg);
  const auto reqs = requests(cfg);
  ts::nn::GenerateOptions o;
  o.max_new_tokens = L;
  o.sampling.temperature = 1.0;
  // Random weights never stop early: every iteration generates the same P x G x L tokens.
  const auto r = ts::bench::time_generate(state, model, reqs, o);
  int64_t tokens = 0;
  for (const auto& c : r.completions) tokens += static_cast<int64_t>(c.tokens.size());
  state.counters["rollout_tokens_per_s"] =
      benchmark::Counter(static_cast<double>(tokens) * state.iterations(), benchmark::Counter::kIsRate);
}

// Sampling without a cache: prompts left-aligned and right-padded to a common length (their
// lengths differ by a byte at most), each step's forward over [N, prompt + generated].
void rollout_recompute(benchmark::State& state, int64_t P, int64_t G, int64_t L) {
  const auto cfg = grpo_config(P, G, L);
  torch::manual_seed(0);
  ts::nn::Transformer model(cfg);
  model->eval();
  torch::NoGradGuard ng;
  const auto reqs = requests(cfg);
  const int64_t N = static_cast<int64_t>(reqs.size());
  size_t prompt = 0;
  for (const auto& r : reqs) prompt = std::max(prompt, r.prompt.size());
  auto ctx = torch::zeros({N, static_cast<int64_t>(prompt) + L}, torch::kInt64);
  for (int64_t i = 0; i < N; ++i)
    for (size_t k = 0; k < reqs[i].prompt.size(); ++k) ctx[i][static_cast<int64_t>(k)] = reqs[i].prompt[k];
  ts::nn::SamplingOptions so;
  so.temperature = 1.0;
  std::vector<ts::nn::TokenSampler> samplers;
  for (int64_t i = 0; i < N; ++i) samplers.emplace_back(static_cast<uint64_t>(i));
  model->forward(ctx.narrow(1, 0, static_cast<int64_t>(prompt)));  // warm-up
  for (auto _ : state) {
    double total = 0;
    for (int64_t t = 0; t < L; t += kStride) {
      const int64_t n = static_cast<int64_t>(prompt) + t;
      const auto t0 = std::chrono::steady_clock::now();
      auto logits = model->forward(ctx.narrow(1, 0, n)).select(1, n - 1).to(torch::kCPU);
      for (int64_t i = 0; i < N; ++i) ctx[i][n] = samplers[i].draw(ts::nn::sampling_probs(logits[i], so));
      total += kStride * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    state.SetIterationTime(total);
  }
  state.counters["rollout_tokens_per_s"] =
      benchmark::Counter(static_cast<double>(N * L) * state.iterations(), benchmark::Counter::kIsRate);
}

void grpo_step(benchmark::State& state, int64_t P, int64_t G, int64_t L) {
  const auto cfg = grpo_config(P, G, L);
  torch::manual_seed(0);
  ts::rl::GrpoObjective obj(cfg, "bench", ts::nn::Transformer(cfg), "random weights");
  auto opt = ts::train::make_adamw(obj.trainable(), cfg.train);
  int64_t step = 0;
  double sample_s = 0, train_s = 0, sampled = 0, trained = 0;
  auto run_step = [&] {
    opt->zero_grad();
    auto r = obj.step(step++, false);
    opt->step();
    const double s = r.metrics.value("sample_seconds", 0.0);
    const double st = r.metrics.value("sample_tokens_per_s", 0.0);
    const double tt = r.metrics.value("train_tokens_per_s", 0.0);
    const double tokens = static_cast<double>(obj.tokens_per_step());
    return std::array<double, 4>{s, st * s, tt > 0 ? tokens / tt : 0.0, tokens};
  };
  run_step();  // warm-up
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto m = run_step();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    sample_s += m[0], sampled += m[1], train_s += m[2], trained += m[3];
  }
  state.counters["rollout_tokens_per_s"] = sample_s > 0 ? sampled / sample_s : 0;
  state.counters["train_tokens_per_s"] = train_s > 0 ? trained / train_s : 0;
  state.counters["sample_share"] = sample_s / std::max(sample_s + train_s, 1e-12);
}

void register_all() {
  struct Case {
    const char* name;
    void (*run)(benchmark::State&, int64_t P, int64_t G, int64_t L);
    int iterations;
  };
  for (const Case& c :
       {Case{"grpo_rollout/tinyseek_cache", rollout_cached, 3},
        Case{"grpo_rollout/base:recompute", rollout_recompute, 1}, Case{"grpo_step/tinyseek", grpo_step, 3}})
    ts::bench::register_timed(
        std::string(c.name) + "/P8/G8/L96", [c](benchmark::State& s) { c.run(s, 8, 8, 96); }, c.iterations);
}
const int registered = (register_all(), 0);

}  // namespace
