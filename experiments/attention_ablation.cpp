#include "experiments/attention_ablation.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>

#include "csrc/nn/generate.h"
#include "csrc/run/outcome.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/trainer.h"
#include "csrc/util/fs.h"

namespace ts::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kRepeats = 3;

void check_attention_ablation_config(const config::Config& cfg) {
  train::check_pretrain_config(cfg);
  train::check_data_config(cfg);
  const auto& d = cfg.decode_bench;
  if (d.context_max < d.context_min)
    throw config::InvalidKeys({"decode_bench.context_max", "decode_bench.context_min"},
                              fmt::format("expected >= context_min ({}), got {}", d.context_min, d.context_max));
  if (d.block_size % 16)
    throw config::InvalidKeys({"decode_bench.block_size"},
                              fmt::format("expected a multiple of 16, got {}", d.block_size));
}

json measure_decode(const config::Config& cfg) {
  check_attention_ablation_config(cfg);
  const auto& d = cfg.decode_bench;
  if (cfg.train.threads > 0) torch::set_num_threads(static_cast<int>(cfg.train.threads));
  torch::NoGradGuard ng;
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  nn::Transformer model(cfg);
  model->eval();
  nn::set_mla_decode_path(model, d.mla_path == "naive" ? nn::MlaDecodePath::kNaive : nn::MlaDecodePath::kAbsorbed);
  json out = json::object();
  json columns = json::array({"kv_cache_bytes_per_token"});
  const int64_t B = d.batch_size;
  for (int64_t ctx = d.context_min; ctx <= d.context_max; ctx *= d.context_factor) {
    run::throw_if_interrupted();
    nn::Decoder dec(model, B, ctx + d.warmup_steps + kRepeats * d.steps, d.block_size);
    auto& cache = dec.cache();
    out["kv_cache_bytes_per_token"] = cache.bytes_per_token();
    // Random cached rows stand in for a prompt of ctx tokens (cost does not depend on values).
    for (int64_t l = 0; l < cache.n_layers(); ++l)
      for (size_t p = 0; p < cache.planes().size(); ++p) cache.pool(l, static_cast<int64_t>(p)).normal_();
    cache.set_lengths(std::vector<int64_t>(static_cast<size_t>(B), ctx));
    auto tokens = torch::randint(0, cfg.model.vocab_size, {B, 1});
    for (int64_t i = 0; i < d.warmup_steps; ++i) {
      run::throw_if_interrupted();
      dec.step(tokens);
    }
    // The fastest of three timed blocks of `steps` steps: on a shared machine the slow blocks
    // measure the other jobs, not the decoder. Each block attends over ctx + a few more tokens.
    double best = 1e30;
    for (int rep = 0; rep < kRepeats; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < d.steps; ++i) {
        run::throw_if_interrupted();  // a relaxed load: nothing against a decode step
        tokens = dec.step(tokens).logits.argmax(-1);
      }
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

run::RunOutcome run_attention_ablation(const config::Config& cfg, const std::string& variant, const fs::path& run_dir,
                                       bool resume) {
  auto outcome = train::train_variant(cfg, variant, run_dir, resume);
  if (outcome.status != run::RunStatus::kCompleted) return outcome;
  std::fprintf(stderr, "%s/%s: decode benchmark (batch %lld, contexts %lld..%lld)\n", cfg.name.c_str(), variant.c_str(),
               static_cast<long long>(cfg.decode_bench.batch_size),
               static_cast<long long>(cfg.decode_bench.context_min),
               static_cast<long long>(cfg.decode_bench.context_max));
  try {
    outcome.summary.update(measure_decode(cfg));
  } catch (const run::Interrupted&) {
    return run::measurements_interrupted(std::move(outcome), run_dir);
  }
  run::RunFolder(run_dir).write_summary(outcome.summary);
  return outcome;
}

}  // namespace ts::experiments
