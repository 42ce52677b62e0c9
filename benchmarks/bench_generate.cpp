// Generation: tokens/s of KV-cached generation (nn::generate) against the model's own forward
// over the whole context for every new token, the quickstart-sized model with MHA and with MLA
// (the attention ablation's shapes), 256 greedy tokens after prompts of 128 and 1024 tokens, batch
// 1 and 16. Both run in this process on random weights (speed does not depend on the values).
//
// The baseline's cost grows with the context, and all 256 of its forwards at batch 16 after 1024
// tokens take minutes here; it times every 16th forward (contexts P, P + 16, ..., P + 240) and
// counts each for the 16 steps from its own context on, an underestimate of its time (each step
// stands for longer ones), so the printed speedup errs toward the baseline.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>

#include "benchmarks/bench_util.h"
#include "csrc/nn/generate.h"

namespace {

constexpr int64_t kNew = 256, kStride = 16;

// configs/quickstart.yaml's model; MLA with configs/attention_ablation.yaml's latent shapes.
ts::config::Config model_config(const std::string& kind, int64_t context) {
  return ts::config::parse_config(
      "data: {seq_len: " + std::to_string(context) +
          "}\nmodel:\n  d_model: 128\n  n_layers: 4\n  n_heads: 4\n  ffn_hidden: 352\n  attention: {kind: " + kind +
          ", kv_lora_rank: 128, qk_nope_head_dim: 32, qk_rope_head_dim: 16, v_head_dim: 32}\n",
      "bench_generate");
}

std::vector<ts::nn::GenerateRequest> prompts(int64_t B, int64_t P) {
  torch::manual_seed(1);
  std::vector<ts::nn::GenerateRequest> out;
  for (int64_t b = 0; b < B; ++b) {
    auto t = torch::randint(0, 256, {P}, torch::kInt64);
    out.push_back({std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + P), static_cast<uint64_t>(b)});
  }
  return out;
}

void cached(benchmark::State& state, const std::string& kind, int64_t B, int64_t P) {
  torch::manual_seed(0);
  ts::nn::Transformer model(model_config(kind, P + kNew));
  const auto requests = prompts(B, P);
  ts::nn::GenerateOptions o;
  o.max_new_tokens = kNew;
  o.sampling.temperature = 0;
  const int64_t bytes_per_token = ts::bench::time_generate(state, model, requests, o).stats.kv_cache_bytes_per_token;
  state.counters["new_tokens_per_s"] =
      benchmark::Counter(static_cast<double>(B * kNew) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["kv_cache_bytes_per_token"] = static_cast<double>(bytes_per_token);
}

void recompute(benchmark::State& state, const std::string& kind, int64_t B, int64_t P) {
  torch::manual_seed(0);
  ts::nn::Transformer model(model_config(kind, P + kNew));
  model->eval();
  torch::NoGradGuard ng;
  const auto ctx = torch::randint(0, 256, {B, P + kNew}, torch::kInt64);
  model->forward(ctx.narrow(1, 0, P));  // warm-up
  for (auto _ : state) {
    double total = 0;
    for (int64_t i = 0; i < kNew; i += kStride) {
      const auto t0 = std::chrono::steady_clock::now();
      auto next = model->forward(ctx.narrow(1, 0, P + i)).select(1, -1).argmax(-1);
      benchmark::DoNotOptimize(next.data_ptr());
      total += kStride * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    state.SetIterationTime(total);
  }
  state.counters["new_tokens_per_s"] =
      benchmark::Counter(static_cast<double>(B * kNew) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["kv_cache_bytes_per_token"] = 0;
}

void register_all() {
  for (const std::string kind : {"mha", "mla"})
    for (int64_t B : {1, 16})
      for (int64_t P : {128, 1024}) {
        const std::string args = "/" + kind + "/B" + std::to_string(B) + "/P" + std::to_string(P) + "/N256";
        ts::bench::register_timed(
            "generate/tinyseek_cache" + args, [=](benchmark::State& s) { cached(s, kind, B, P); }, 2);
        ts::bench::register_timed(
            "generate/base:recompute" + args, [=](benchmark::State& s) { recompute(s, kind, B, P); }, 1);
      }
}
const int registered = (register_all(), 0);

}  // namespace

// One step of the KV-cached model at context 64, batch 1, with S = 1, 2, 3 new tokens: what a
// speculative verify step of S - 1 drafts costs against a plain decoding step (configs/mtp.yaml's
// 6-layer model). Random cache rows stand in for the context.
namespace {
void decode_step(benchmark::State& state, int64_t S) {
  auto cfg = model_config("mha", 256);
  cfg.model.n_layers = 6;
  torch::manual_seed(0);
  ts::nn::Transformer model(cfg);
  model->eval();
  torch::NoGradGuard ng;
  ts::nn::Decoder dec(model, 1, 256, 64);
  dec.step(torch::randint(0, 256, {1, 64}, torch::kInt64));
  const auto tokens = torch::randint(0, 256, {1, S}, torch::kInt64);
  const std::vector<int64_t> keep = {64};
  for (auto _ : state) {
    auto out = dec.step(tokens);
    benchmark::DoNotOptimize(out.logits.data_ptr());
    dec.cache().set_lengths(keep);  // roll back, so every step sees the same context
  }
}
const int registered_steps = [] {
  for (int64_t S : {1, 2, 3})
    benchmark::RegisterBenchmark(("decode_step/S" + std::to_string(S) + "/B1/ctx64").c_str(),
                                 [=](benchmark::State& s) { decode_step(s, S); })
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(1.0);
  return 0;
}();
}  // namespace
