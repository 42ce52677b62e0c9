#include "experiments/mtp_study.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>

#include "csrc/nn/generate.h"
#include "csrc/run/outcome.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/data.h"
#include "csrc/train/trained_run.h"
#include "csrc/train/trainer.h"

namespace ts::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

void check_mtp_study_config(const config::Config& cfg) {
  train::check_pretrain_config(cfg);
  train::check_data_config(cfg);
  const auto& s = cfg.spec_bench;
  const int64_t need = s.prompt_tokens + s.new_tokens;
  if (need > cfg.data.seq_len)
    throw config::InvalidKeys({"spec_bench.new_tokens", "spec_bench.prompt_tokens", "data.seq_len"},
                              fmt::format("prompt_tokens + new_tokens ({}) must fit the model's context data.seq_len "
                                          "({})",
                                          need, cfg.data.seq_len));
  for (auto [key, b] :
       {std::pair{"spec_bench.batch_small", s.batch_small}, std::pair{"spec_bench.batch_large", s.batch_large}})
    if (s.prompts % b)
      throw config::InvalidKeys({key, "spec_bench.prompts"},
                                fmt::format("must divide spec_bench.prompts ({}), got {}", s.prompts, b));
}

json measure_speculative(const config::Config& cfg, nn::Transformer& model) {
  check_mtp_study_config(cfg);
  const auto& s = cfg.spec_bench;
  const auto data = train::load_data(cfg);
  const int64_t n_val = static_cast<int64_t>(data.val.size());
  if (n_val < s.prompt_tokens)
    throw config::InvalidKeys({"spec_bench.prompt_tokens"},
                              fmt::format("the validation split holds {} tokens, fewer than a prompt", n_val));
  // Prompts from evenly spaced offsets of the held-out text.
  std::vector<nn::GenerateRequest> prompts;
  for (int64_t i = 0; i < s.prompts; ++i) {
    const int64_t at = (n_val - s.prompt_tokens) * i / std::max<int64_t>(s.prompts, 1);
    prompts.push_back({std::vector<int64_t>(data.val.begin() + at, data.val.begin() + at + s.prompt_tokens),
                       static_cast<uint64_t>(i)});
  }
  torch::NoGradGuard ng;
  model->eval();
  nn::GenerateOptions o;
  o.max_new_tokens = s.new_tokens;
  o.sampling.temperature = 0;
  const int64_t D = model->mtp_depth();
  json out = json::object();
  json columns = json::array();
  for (int64_t B : {s.batch_small, s.batch_large}) {
    // Each batch of prompts is generated plain and speculatively in turn, a warm-up call of each
    // and then `repeats` timed calls of each, alternating, so that both see the same spells of a
    // shared machine; each batch's fastest call of each kind counts (whole generate() calls,
    // prefill included), and the batches' fastest times are summed.
    std::vector<std::vector<int64_t>> plain_tokens, spec_tokens;
    nn::GenerateStats plain, spec;
    spec.drafts_verified.assign(static_cast<size_t>(D), 0);
    spec.drafts_accepted = spec.drafts_verified;
    auto call = [&](bool speculative, const std::vector<nn::GenerateRequest>& batch, double& best) {
      run::throw_if_interrupted();  // between generate() calls: one batch's decoding at most
      o.speculative = speculative;
      const auto t0 = std::chrono::steady_clock::now();
      auto res = nn::generate(model, batch, o);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      return res;
    };
    for (int64_t at = 0; at < s.prompts; at += B) {
      std::vector<nn::GenerateRequest> batch(prompts.begin() + at, prompts.begin() + at + B);
      double best_plain = 1e30, best_spec = 1e30, ignored = 0;
      for (int64_t r = 0; r <= s.repeats; ++r) {
        auto p = call(false, batch, r > 0 ? best_plain : ignored);
        if (r == 0) {  // tokens and counts are the same in every call
          for (auto& c : p.completions) plain_tokens.push_back(c.tokens);
          plain.decode_tokens += p.stats.decode_tokens + B;  // the first token of each sequence too
        }
        if (D == 0) continue;
        auto q = call(true, batch, r > 0 ? best_spec : ignored);
        if (r > 0) continue;
        for (auto& c : q.completions) spec_tokens.push_back(c.tokens);
        spec.decode_tokens += q.stats.decode_tokens + B;
        spec.verify_steps += q.stats.verify_steps;
        spec.sequence_steps += q.stats.sequence_steps;
        for (size_t k = 0; k < spec.drafts_verified.size(); ++k) {
          spec.drafts_verified[k] += q.stats.drafts_verified[k];
          spec.drafts_accepted[k] += q.stats.drafts_accepted[k];
        }
      }
      plain.decode_s += best_plain;
      spec.decode_s += best_spec;
    }
    const std::string b = fmt::format("b{}", B);
    out["tok_s_plain_" + b] = static_cast<double>(plain.decode_tokens) / plain.decode_s;
    columns.push_back("tok_s_plain_" + b);
    if (D == 0) continue;
    if (spec_tokens != plain_tokens)
      throw std::runtime_error("mtp study: greedy speculative decoding differs from plain greedy decoding");
    out["tok_s_spec_" + b] = static_cast<double>(spec.decode_tokens) / spec.decode_s;
    out["speedup_" + b] = plain.decode_s / spec.decode_s;
    out["tokens_per_step_" + b] =  // per sequence and verify step
        static_cast<double>(spec.decode_tokens - s.prompts) / std::max<int64_t>(spec.sequence_steps, 1);
    for (int64_t k = 1; k <= D; ++k) {
      out[fmt::format("acceptance_{}_{}", k, b)] = spec.acceptance(static_cast<size_t>(k - 1));
      if (B == s.batch_small) columns.push_back(fmt::format("acceptance_{}_{}", k, b));
    }
    for (const auto& key : {"tok_s_spec_" + b, "tokens_per_step_" + b, "speedup_" + b}) columns.push_back(key);
  }
  out["spec_bench"] = {{"prompts", s.prompts},
                       {"prompt_tokens", s.prompt_tokens},
                       {"new_tokens", s.new_tokens},
                       {"threads", torch::get_num_threads()}};
  out["report_columns"] = columns;
  return out;
}

run::RunOutcome run_mtp_study(const config::Config& cfg, const std::string& variant, const fs::path& run_dir,
                              bool resume) {
  check_mtp_study_config(cfg);
  auto outcome = train::train_variant(cfg, variant, run_dir, resume);
  if (outcome.status != run::RunStatus::kCompleted) return outcome;
  std::fprintf(stderr, "%s/%s: greedy decoding of %lld held-out prompts, plain%s, batch %lld and %lld\n",
               cfg.name.c_str(), variant.c_str(), static_cast<long long>(cfg.spec_bench.prompts),
               cfg.model.mtp.depth > 0 ? " and speculative (MTP drafts)" : "",
               static_cast<long long>(cfg.spec_bench.batch_small), static_cast<long long>(cfg.spec_bench.batch_large));
  auto trained = train::resolve_run({run_dir.string(), -1});
  auto model = train::load_model(trained);
  json m;
  try {
    m = measure_speculative(cfg, model);
  } catch (const run::Interrupted&) {
    return run::measurements_interrupted(std::move(outcome), run_dir);
  }
  auto columns = outcome.summary.value("report_columns", json::array());
  for (const auto& c : m["report_columns"]) columns.push_back(c);
  outcome.summary.update(m);
  outcome.summary["report_columns"] = columns;
  run::RunFolder(run_dir).write_summary(outcome.summary);
  return outcome;
}

}  // namespace ts::experiments
