#include "experiments/attention_ablation.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>

#include "csrc/nn/attention/decode.h"
#include "csrc/train/checkpoint.h"

namespace ts::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kRepeats = 3;

json measure_decode(const config::Config& cfg) {
  const auto& d = cfg.decode_bench;
  if (d.context_max < d.context_min)
    throw config::ConfigError(
        fmt::format("decode_bench.context_max: expected >= context_min ({}), got {}", d.context_min, d.context_max));
  if (d.block_size % 16)
    throw config::ConfigError(fmt::format("decode_bench.block_size: expected a multiple of 16, got {}", d.block_size));
  if (cfg.train.threads > 0) torch::set_num_threads(static_cast<int>(cfg.train.threads));
  torch::NoGradGuard ng;
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  nn::Transformer model(cfg);
  model->eval();
  nn::set_mla_decode_path(model, d.mla_path == "naive" ? nn::MlaDecodePath::kNaive : nn::MlaDecodePath::kAbsorbed);
  json out = json::object();
  json columns = json::array({"kv_cache_bytes_per_token"});
  const int64_t B = d.batch_size;
  for (int64_t ctx = d.context_min; ctx <= d.context_max; ctx *= 2) {
    nn::Decoder dec(model, cfg, B, ctx + d.warmup_steps + kRepeats * d.steps, d.block_size);
    auto& cache = dec.cache();
    out["kv_cache_bytes_per_token"] = cache.bytes_per_token();
    // Random cached rows stand in for a prompt of ctx tokens (cost does not depend on values).
    for (int64_t l = 0; l < cache.n_layers(); ++l)
      for (size_t p = 0; p < cache.planes().size(); ++p) cache.pool(l, static_cast<int64_t>(p)).normal_();
    cache.set_lengths(std::vector<int64_t>(static_cast<size_t>(B), ctx));
    auto tokens = torch::randint(0, cfg.model.vocab_size, {B, 1});
    for (int64_t i = 0; i < d.warmup_steps; ++i) dec.step(tokens);
    // The fastest of three timed blocks of `steps` steps: on a shared machine the slow blocks
    // measure the other jobs, not the decoder. Each block attends over ctx + a few more tokens.
    double best = 1e30;
    for (int rep = 0; rep < kRepeats; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < d.steps; ++i) tokens = dec.step(tokens).argmax(-1);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const std::string key = fmt::format("decode_tok_s_{}", ctx);
    out[key] = static_cast<double>(B * d.steps) / best;
    columns.push_back(key);
  }
  out["decode_batch_size"] = B;
  out["decode_path"] = cfg.model.attention.kind == "mla" ? d.mla_path : "sdpa";
  out["report_columns"] = columns;
  return out;
}

train::RunOutcome run_attention_ablation(const config::Config& cfg, const std::string& variant, const fs::path& run_dir,
                                         bool resume) {
  auto outcome = train::train_variant(cfg, variant, run_dir, resume);
  if (outcome.status != train::RunStatus::kCompleted) return outcome;
  std::fprintf(stderr, "%s/%s: decode benchmark (batch %lld, contexts %lld..%lld)\n", cfg.name.c_str(), variant.c_str(),
               static_cast<long long>(cfg.decode_bench.batch_size),
               static_cast<long long>(cfg.decode_bench.context_min),
               static_cast<long long>(cfg.decode_bench.context_max));
  outcome.summary.update(measure_decode(cfg));
  train::atomic_write(run_dir / "summary.json", outcome.summary.dump(2) + "\n");
  return outcome;
}

}  // namespace ts::experiments
