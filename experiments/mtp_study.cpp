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
    // One pass: every prompt, batch by batch; the whole generate() calls are timed (prefill too).
    auto pass = [&](bool speculative, std::vector<std::vector<int64_t>>* tokens) {
      o.speculative = speculative;
      nn::GenerateStats sum;
      sum.drafts_verified.assign(static_cast<size_t>(speculative ? D : 0), 0);
      sum.drafts_accepted = sum.drafts_verified;
      if (tokens) tokens->clear();
      for (int64_t at = 0; at < s.prompts; at += B) {
        run::throw_if_interrupted();  // between generate() calls: one batch's decoding at most
        std::vector<nn::GenerateRequest> batch(prompts.begin() + at, prompts.begin() + at + B);
        const auto t0 = std::chrono::steady_clock::now();
        auto res = nn::generate(model, batch, o);
        sum.decode_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (tokens)
          for (auto& c : res.completions) tokens->push_back(c.tokens);
        sum.decode_tokens += res.stats.decode_tokens + B;  // the first token of each sequence too
        sum.verify_steps += res.stats.verify_steps;
        sum.sequence_steps += res.stats.sequence_steps;
        for (size_t k = 0; k < sum.drafts_verified.size(); ++k) {
          sum.drafts_verified[k] += res.stats.drafts_verified[k];
          sum.drafts_accepted[k] += res.stats.drafts_accepted[k];
        }
      }
      return sum;
    };
    // A warm-up pass of each, then plain and speculative passes alternate, so that both see the
    // same spells of a shared machine; the fastest pass of each counts.
    std::vector<std::vector<int64_t>> plain_tokens, spec_tokens;
    nn::GenerateStats plain = pass(false, &plain_tokens), spec;
    if (D > 0) spec = pass(true, &spec_tokens);
    plain.decode_s = spec.decode_s = 1e30;
    for (int64_t r = 0; r < s.repeats; ++r) {
      const auto p = pass(false, nullptr);
      if (p.decode_s < plain.decode_s) plain = p;
      if (D == 0) continue;
      const auto q = pass(true, nullptr);
      if (q.decode_s < spec.decode_s) spec = q;
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
