// `tinyseek generate RUN_DIR[/VARIANT] [--step N] (--prompt TEXT | --prompts FILE) ...`: text from
// a trained run's checkpoint (csrc/nn/generate.h). Every problem with the run, a prompt or a value
// exits 2 with one line naming it.
#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "csrc/config/config.h"
#include "csrc/nn/generate.h"
#include "csrc/nn/model_config.h"
#include "csrc/run/device.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/trained_run.h"
#include "experiments/commands.h"

namespace ts::experiments {

namespace {

namespace fs = std::filesystem;
using config::ConfigError;
using nlohmann::json;

struct GenerateArgs {
  train::RunRef run;
  std::string prompt, prompts_file;
  int64_t max_new_tokens = 0, top_k = 0, num_samples = 1, threads = 0;
  double temperature = 0, top_p = 0;
  uint64_t seed = 0;
  std::string stop, mla_decode, speculative = "none";
  int64_t draft_tokens = 0;
  bool json = false;
};

std::vector<std::string> read_prompts(const std::string& path) {
  std::ifstream in(path);
  if (!in || fs::is_directory(path)) throw ConfigError(path + ": --prompts: cannot read the file");
  std::vector<std::string> out;
  const bool jsonl = path.ends_with(".jsonl");
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    if (!jsonl) {
      out.push_back(line);
      continue;
    }
    // JSON lines: a string, or an object with a "prompt" string (prompts with newlines).
    try {
      const json j = json::parse(line);
      if (j.is_string())
        out.push_back(j.get<std::string>());
      else if (j.is_object() && j.contains("prompt") && j["prompt"].is_string())
        out.push_back(j["prompt"].get<std::string>());
      else
        throw ConfigError(
            fmt::format("{}:{}: --prompts: expected a JSON string or {{\"prompt\": \"...\"}}", path, line_no));
    } catch (const json::exception& e) {
      throw ConfigError(fmt::format("{}:{}: --prompts: not valid JSON ({})", path, line_no, e.what()));
    }
  }
  if (out.empty()) throw ConfigError(path + ": --prompts: no prompts in the file (one per line)");
  return out;
}

// Byte-level text for a terminal: valid UTF-8 as it is, an invalid byte as U+FFFD, control
// characters other than newline and tab as \xNN (a model's raw bytes could drive the terminal).
std::string printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 && c != '\n' && c != '\t')
        out += fmt::format("\\x{:02x}", c);
      else if (c == 0x7f)
        out += "\\x7f";
      else
        out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // Length of a well-formed sequence from its lead byte, then its continuation bytes.
    const size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (ok && n == 3) {  // no overlong forms, no surrogates
      const auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);
    }
    if (ok && n == 4) {
      const auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
    }
    if (ok) {
      out.append(s, i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

int generate_command(const GenerateArgs& a, CLI::App& sub) {
  const train::TrainedRun trained = train::resolve_run(a.run);
  const fs::path& dir = trained.dir;
  const std::string& cfg_path = trained.config_path;
  config::Config cfg = trained.config;
  // The run's generate section gives the defaults; each flag given replaces one.
  auto& g = cfg.generate;
  if (sub.count("--max-new-tokens")) g.max_new_tokens = a.max_new_tokens;
  if (sub.count("--temperature")) g.temperature = a.temperature;
  if (sub.count("--top-k")) g.top_k = a.top_k;
  if (sub.count("--top-p")) g.top_p = a.top_p;
  if (sub.count("--stop")) g.stop = a.stop;
  if (sub.count("--mla-decode")) g.mla_decode = a.mla_decode;
  const int64_t ctx = nn::model_context(cfg);
  try {
    nn::check_model_config(cfg);
    nn::check_generate_config(cfg);
  } catch (const config::InvalidKeys& e) {
    // A flag's value, or the run's own config.
    static const std::map<std::string, std::string> flags = {{"generate.max_new_tokens", "--max-new-tokens"},
                                                             {"generate.top_k", "--top-k"}};
    auto it = flags.find(e.keys[0]);
    if (it != flags.end() && sub.count(it->second))
      throw ConfigError(it->second + std::string(e.what()).substr(e.keys[0].size()));
    throw ConfigError(cfg_path + ": " + e.what());
  }

  std::vector<std::string> prompts;
  if (!a.prompts_file.empty()) prompts = read_prompts(a.prompts_file);
  if (sub.count("--prompt")) prompts.push_back(a.prompt);
  if (cfg.model.vocab_size < 256)
    throw ConfigError(fmt::format("{}: model.vocab_size is {}; text prompts need a byte-level model (>= 256)", cfg_path,
                                  cfg.model.vocab_size));
  int64_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string which = sub.count("--prompt") && i + 1 == prompts.size()
                                  ? std::string("--prompt")
                                  : fmt::format("--prompts {} (prompt {})", a.prompts_file, i + 1);
    const auto n = static_cast<int64_t>(prompts[i].size());
    if (n == 0) throw ConfigError(which + ": empty prompt (at least one token is needed)");
    if (n > ctx)
      throw ConfigError(
          fmt::format("{}: {} tokens, longer than the model's context of {} tokens (data.seq_len)", which, n, ctx));
    longest = std::max(longest, n);
    if (n + g.max_new_tokens > ctx)
      throw ConfigError(
          fmt::format("{}: {} tokens plus --max-new-tokens {} exceed the model's context of {} tokens "
                      "(data.seq_len); ask for at most {} new tokens",
                      which, n, g.max_new_tokens, ctx, ctx - n));
  }

  if (g.max_new_tokens == 0) {
    g.max_new_tokens = ctx - longest;  // what the context leaves
    if (g.max_new_tokens == 0)
      throw ConfigError(
          fmt::format("--prompt: {} tokens fill the model's context of {} tokens (data.seq_len); no room "
                      "for new tokens",
                      longest, ctx));
  }

  if (a.threads > 0)
    torch::set_num_threads(static_cast<int>(a.threads));
  else if (cfg.train.threads > 0)
    torch::set_num_threads(static_cast<int>(cfg.train.threads));
  const torch::Device dev = run::pick_device(cfg.train);
  nn::Transformer model = train::load_model(trained);
  const int64_t step = trained.step;
  model->to(dev);
  nn::set_mla_decode_path(model, g.mla_decode == "naive" ? nn::MlaDecodePath::kNaive : nn::MlaDecodePath::kAbsorbed);

  nn::GenerateOptions o;
  o.max_new_tokens = g.max_new_tokens;
  o.sampling = {g.temperature, g.top_k, g.top_p};
  o.block_size = g.block_size;
  if (!g.stop.empty()) o.stop_sequences.push_back(nn::bytes_to_tokens(g.stop));
  std::vector<nn::GenerateRequest> requests;
  for (const auto& p : prompts)
    for (int64_t s = 0; s < a.num_samples; ++s)
      requests.push_back({nn::bytes_to_tokens(p), a.seed + static_cast<uint64_t>(requests.size())});
  const bool speculative = a.speculative == "mtp";
  if (speculative && model->mtp_depth() == 0)
    throw ConfigError(
        fmt::format("--speculative mtp: {} has no MTP modules (model.mtp.depth is 0 in {})", dir.string(), cfg_path));
  if (a.draft_tokens > model->mtp_depth())
    throw ConfigError(fmt::format("--draft-tokens {}: the model's MTP depth is {} (model.mtp.depth)", a.draft_tokens,
                                  model->mtp_depth()));
  // Speculative decoding is measured against plain decoding of the same requests in this run.
  std::optional<nn::GenerateResult> plain;
  if (speculative) plain = nn::generate(model, requests, o);
  o.speculative = speculative;
  o.draft_tokens = a.draft_tokens;
  const auto res = nn::generate(model, requests, o);

  const auto& st = res.stats;
  json spec = nullptr;
  std::string spec_line;
  if (speculative) {
    const auto& ps = plain->stats;
    std::vector<double> acceptance;
    for (size_t k = 0; k < st.drafts_verified.size(); ++k) acceptance.push_back(st.acceptance(k));
    const double per_step = st.sequence_steps ? static_cast<double>(st.decode_tokens) / st.sequence_steps : 0.0;
    const double speedup = ps.decode_tokens_per_s() > 0 ? st.decode_tokens_per_s() / ps.decode_tokens_per_s() : 0.0;
    bool same = true;  // greedy speculative decoding must reproduce plain greedy decoding
    for (size_t i = 0; i < res.completions.size(); ++i)
      same = same && res.completions[i].tokens == plain->completions[i].tokens;
    spec = {{"draft_tokens", st.drafts_verified.size()},
            {"acceptance_per_depth", acceptance},
            {"drafts_verified", st.drafts_verified},
            {"drafts_accepted", st.drafts_accepted},
            {"verify_steps", st.verify_steps},
            {"tokens_per_step", per_step},
            {"mean_accepted_drafts", per_step - 1},
            {"plain_decode_tokens_per_s", ps.decode_tokens_per_s()},
            {"speculative_decode_tokens_per_s", st.decode_tokens_per_s()},
            {"speedup", speedup},
            {"same_tokens_as_plain", same}};
    std::string acc;
    for (size_t k = 0; k < acceptance.size(); ++k) acc += fmt::format("{}{:.1f}%", k ? " / " : "", 100 * acceptance[k]);
    spec_line = fmt::format(
        "speculative (MTP, {} drafts per step): acceptance {} by depth, {:.2f} tokens per step; decode {:.0f} "
        "tokens/s against {:.0f} plain ({:.2f}x){}\n",
        acceptance.size(), acc, per_step, st.decode_tokens_per_s(), ps.decode_tokens_per_s(), speedup,
        g.temperature == 0 ? (same ? ", same tokens as plain greedy" : ", TOKENS DIFFER FROM PLAIN GREEDY") : "");
  }
  if (a.json) {
    json out = {{"run", dir.string()},
                {"step", step},
                {"device", dev.str()},
                {"settings",
                 {{"max_new_tokens", g.max_new_tokens},
                  {"temperature", g.temperature},
                  {"top_k", g.top_k},
                  {"top_p", g.top_p},
                  {"stop", g.stop},
                  {"seed", a.seed},
                  {"num_samples", a.num_samples},
                  {"mla_decode", cfg.model.attention.kind == "mla" ? g.mla_decode : "sdpa"}}},
                {"batch", st.batch},
                {"prompt_tokens", st.prompt_tokens},
                {"prefill_s", st.prefill_s},
                {"decode_s", st.decode_s},
                {"decode_tokens", st.decode_tokens},
                {"decode_tokens_per_s", st.decode_tokens_per_s()},
                {"kv_cache_bytes", st.kv_cache_bytes},
                {"kv_cache_bytes_per_token", st.kv_cache_bytes_per_token},
                {"speculative", spec},
                {"completions", json::array()}};
    for (size_t i = 0; i < res.completions.size(); ++i) {
      const auto& c = res.completions[i];
      out["completions"].push_back({{"prompt_index", i / a.num_samples},
                                    {"sample", i % a.num_samples},
                                    {"seed", requests[i].seed},
                                    {"prompt", prompts[i / a.num_samples]},
                                    {"text", nn::tokens_to_bytes(c.tokens)},
                                    {"tokens", c.tokens},
                                    {"new_tokens", c.tokens.size()},
                                    {"finish_reason", c.finish_reason}});
    }
    // Byte-level text need not be valid UTF-8: invalid bytes print as U+FFFD.
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return 0;
  }
  for (size_t i = 0; i < res.completions.size(); ++i) {
    const auto& c = res.completions[i];
    std::cout << fmt::format("--- prompt {}, sample {}, seed {}: {} new tokens ({})\n", i / a.num_samples + 1,
                             i % a.num_samples + 1, requests[i].seed, c.tokens.size(), c.finish_reason)
              << printable(prompts[i / a.num_samples] + nn::tokens_to_bytes(c.tokens)) << "\n";
  }
  std::cerr << fmt::format(
      "{} (step {}, {}): {} sequences, prefill {:.1f} ms for {} prompt tokens, decode {:.0f} tokens/s, KV cache {:.2f} "
      "MiB ({} bytes per token)\n",
      dir.string(), step, dev.str(), st.batch, st.prefill_s * 1e3, st.prompt_tokens, st.decode_tokens_per_s(),
      static_cast<double>(st.kv_cache_bytes) / (1 << 20), st.kv_cache_bytes_per_token);
  std::cerr << spec_line;
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* sub = app.add_subcommand("generate", "Generate text from a trained run's checkpoint (KV-cached decoding)");
  sub->add_option("run_dir", a->run.dir, "Run folder: runs/<name>/<variant> (or runs/<name> with one variant)")
      ->required();
  sub->add_option("--step", a->run.step, "Checkpoint step (default: the latest)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  auto* p = sub->add_option("--prompt", a->prompt, "Prompt text (bytes are the tokens)");
  auto* pf = sub->add_option("--prompts", a->prompts_file,
                             "File of prompts: one per line, or JSON lines (a string or {\"prompt\": ...}) in *.jsonl");
  p->excludes(pf);
  pf->excludes(p);
  sub->add_option("--max-new-tokens", a->max_new_tokens,
                  "Tokens to generate per sequence (default: generate.max_new_tokens)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub->add_option("--temperature", a->temperature, "0 = greedy (default: generate.temperature)")
      ->check(CLI::Range(0.0, 100.0));
  sub->add_option("--top-k", a->top_k, "Keep the k most likely tokens; 0 = off")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  sub->add_option("--top-p", a->top_p, "Keep the most likely tokens up to this mass; 1 = off")
      ->check(CLI::Range(1e-6, 1.0));
  sub->add_option("--seed", a->seed, "Seed of sequence 0; sequence i (prompt-major, then sample) uses seed + i");
  sub->add_option("--num-samples", a->num_samples, "Completions per prompt")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  sub->add_option("--stop", a->stop, "Stop string: a sequence ends once its text ends with it");
  sub->add_option("--mla-decode", a->mla_decode, "MLA decode path")->check(CLI::IsMember({"absorbed", "naive"}));
  sub->add_option("--speculative", a->speculative,
                  "mtp: draft with the model's MTP modules and verify in one forward (needs model.mtp.depth > 0); "
                  "reports acceptance and the speed-up over plain decoding, measured in this run")
      ->check(CLI::IsMember({"none", "mtp"}));
  sub->add_option("--draft-tokens", a->draft_tokens, "Drafts per speculative step (default: the MTP depth)")
      ->check(CLI::Range(int64_t{1}, int64_t{16}));
  sub->add_option("--threads", a->threads, "Intra-op threads (default: the run's train.threads)")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  sub->add_flag("--json", a->json,
                "Print one JSON object: completions (text, tokens), prefill time, decode tokens/s, KV-cache bytes. "
                "Without it each completion prints after its prompt, invalid UTF-8 as U+FFFD and control bytes as "
                "\\xNN");
  return {sub, [a, sub] {
            if (!sub->count("--prompt") && !sub->count("--prompts"))
              throw ConfigError("generate: give --prompt TEXT or --prompts FILE");
            return generate_command(*a, *sub);
          }};
}

}  // namespace ts::experiments
