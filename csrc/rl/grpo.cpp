#include "csrc/rl/grpo.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>

#include "csrc/nn/generate.h"
#include "csrc/ops/grpo.h"
#include "csrc/run/device.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/hf.h"
#include "csrc/train/trainer.h"

namespace ts::rl {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int64_t kGenerateChunk = 256;  // sequences per generate() call in evaluation
constexpr uint64_t kEvalStream = 0xE7A1;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

double stddev(const std::vector<double>& v) {  // with Bessel's correction
  return torch::tensor(v, torch::kDouble).std().item<double>();
}

nn::GenerateOptions sampling_options(const config::Config& cfg, double temperature) {
  nn::GenerateOptions o;
  o.max_new_tokens = cfg.grpo.max_completion_length;
  o.sampling.temperature = temperature;
  o.sampling.top_k = cfg.generate.top_k;
  o.sampling.top_p = cfg.generate.top_p;
  o.stop_sequences = {nn::bytes_to_tokens(kStopString)};
  o.block_size = cfg.generate.block_size;
  return o;
}

// generate() in chunks of kGenerateChunk sequences (evaluation's batches can be large).
std::vector<nn::Completion> generate_chunked(nn::Transformer& model, const std::vector<nn::GenerateRequest>& reqs,
                                             const nn::GenerateOptions& o) {
  std::vector<nn::Completion> out;
  for (size_t at = 0; at < reqs.size(); at += kGenerateChunk) {
    std::vector<nn::GenerateRequest> part(
        reqs.begin() + static_cast<int64_t>(at),
        reqs.begin() + static_cast<int64_t>(std::min(reqs.size(), at + kGenerateChunk)));
    auto r = nn::generate(model, part, o);
    for (auto& c : r.completions) out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

int64_t max_prompt_length(const config::TaskConfig& t) {
  auto digits = [](int64_t x) { return static_cast<int64_t>(std::to_string(x).size()); };
  if (t.name == "arithmetic") return 8 + 2 * t.digits_max + 1 + 2;                   // "Compute " a op b ".\n"
  return 4 + t.numbers * (digits(t.max_number) + 1) + 8 + digits(t.max_target) + 2;  // "Use " n.. "to make " t ".\n"
}

void check_grpo_config(const config::Config& c) {
  train::check_pretrain_config(c);  // one process; bf16 only on CUDA
  check_task_config(c.task);
  if (c.grpo.init_from.empty())
    throw config::InvalidKeys({"grpo.init_from"},
                              "required: the trained run to start from, RUN_DIR[/VARIANT] or a variant of this run");
  if (c.model.vocab_size < 256)
    throw config::InvalidKeys({"model.vocab_size"},
                              fmt::format("the task's text is bytes: expected >= 256, got {}", c.model.vocab_size));
  const int64_t prompt = max_prompt_length(c.task);
  if (prompt + c.grpo.max_completion_length > c.data.seq_len)
    throw config::InvalidKeys(
        {"grpo.max_completion_length", "data.seq_len"},
        fmt::format("a prompt of up to {} tokens plus {} completion tokens exceeds the model's context "
                    "data.seq_len ({})",
                    prompt, c.grpo.max_completion_length, c.data.seq_len));
}

GrpoStateImpl::GrpoStateImpl(nn::Transformer policy_, nn::Transformer reference_, int64_t N, int64_t T)
    : policy(register_module("policy", policy_)) {
  if (reference_) {
    reference = register_module("reference", reference_);
    for (auto& p : reference->parameters()) p.set_requires_grad(false);
  }
  tokens = register_buffer("rollout_tokens", torch::zeros({N, T}, torch::kLong));
  mask = register_buffer("rollout_mask", torch::zeros({N, T - 1}));
  old_logp = register_buffer("rollout_old_logp", torch::zeros({N, T - 1}));
  ref_logp = register_buffer("rollout_ref_logp", torch::zeros({N, T - 1}));
  advantages = register_buffer("rollout_advantages", torch::zeros({N}));
  info = register_buffer("rollout_info", torch::tensor({int64_t{-1}, int64_t{0}}, torch::kLong));
  start_eval = register_buffer("start_eval", torch::full({4}, std::nan(""), torch::kDouble));
}

GrpoObjective::GrpoObjective(const config::Config& cfg, const std::string& variant, const train::TrainedRun& init)
    : GrpoObjective(cfg, variant, train::load_model(init),
                    init.hf ? "hf:" + init.dir.string() : fmt::format("{} (step {})", init.dir.string(), init.step)) {}

GrpoObjective::GrpoObjective(const config::Config& cfg, const std::string& variant, nn::Transformer policy,
                             std::string init_desc)
    : cfg_(cfg),
      label_(cfg.name + "/" + variant),
      init_desc_(std::move(init_desc)),
      device_(run::pick_device(cfg.train)),
      task_(cfg.task) {
  if (cfg.train.threads > 0) torch::set_num_threads(static_cast<int>(cfg.train.threads));
  nn::Transformer reference{nullptr};
  if (cfg.grpo.beta > 0) {  // a frozen copy of the starting policy
    reference = nn::Transformer(cfg);
    torch::NoGradGuard ng;
    auto src = policy->named_parameters();
    for (auto& item : reference->named_parameters()) item.value().copy_(src[item.key()]);
    auto srcb = policy->named_buffers();
    for (auto& item : reference->named_buffers()) item.value().copy_(srcb[item.key()]);
  }
  state_ = GrpoState(policy, reference, cfg.grpo.prompts_per_step * cfg.grpo.group_size, cfg.data.seq_len);
  state_->to(device_);
  state_->policy->train();
  if (state_->reference) state_->reference->eval();
}

torch::Tensor GrpoObjective::token_logp(nn::Transformer& model, int64_t length, double* entropy) {
  auto tok = state_->tokens.narrow(1, 0, length);
  auto lsm = torch::log_softmax(model->forward(tok).narrow(1, 0, length - 1).to(torch::kFloat), -1);
  auto logp = lsm.gather(-1, tok.narrow(1, 1, length - 1).unsqueeze(-1)).squeeze(-1);
  if (entropy) {
    torch::NoGradGuard ng;
    auto m = state_->mask.narrow(1, 0, length - 1);
    auto ent = -(lsm.exp() * lsm).sum(-1);
    *entropy = ((ent * m).sum() / m.sum().clamp_min(1.0)).item<double>();
  }
  return logp;
}

void GrpoObjective::sample(int64_t batch, json& metrics) {
  torch::NoGradGuard ng;
  const auto& g = cfg_.grpo;
  const int64_t P = g.prompts_per_step, G = g.group_size, N = P * G;
  const auto problems = task_.problems(Split::kTrain, Level::kRl, batch * P, P);
  std::vector<nn::GenerateRequest> reqs(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    reqs[i].prompt = nn::bytes_to_tokens(problems[i / G].prompt);
    reqs[i].seed = mix_seed({static_cast<uint64_t>(cfg_.seed), static_cast<uint64_t>(batch), static_cast<uint64_t>(i)});
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto res = nn::generate(state_->policy, reqs, sampling_options(cfg_, g.temperature));
  const double sample_s = seconds_since(t0);
  state_->policy->train();

  std::vector<double> fmt_r(N), acc_r(N), solved(N), total(N), lengths(N), right_len, wrong_len;
  int64_t clipped = 0, generated = 0;
  for (int64_t i = 0; i < N; ++i) {
    const auto& c = res.completions[i];
    const std::string text = nn::tokens_to_bytes(c.tokens);
    fmt_r[i] = format_reward(text);
    acc_r[i] = accuracy_reward(cfg_.task, problems[i / G], text);
    solved[i] = correct(cfg_.task, problems[i / G], text) ? 1 : 0;
    total[i] = g.format_weight * fmt_r[i] + g.accuracy_weight * acc_r[i];
    lengths[i] = static_cast<double>(c.tokens.size());
    (solved[i] ? right_len : wrong_len).push_back(lengths[i]);
    clipped += c.finish_reason == "length";
    generated += static_cast<int64_t>(c.tokens.size());
  }
  auto rewards = torch::tensor(total, torch::kDouble).view({P, G});
  auto adv = ops::group_advantages(rewards, g.scale_rewards).view({N}).to(torch::kFloat);

  // Pack prompt + completion rows; the mask marks the targets that are completion tokens.
  auto tokens = torch::zeros_like(state_->tokens, torch::TensorOptions().device(torch::kCPU));
  auto mask = torch::zeros_like(state_->mask, torch::TensorOptions().device(torch::kCPU));
  auto* tp = tokens.data_ptr<int64_t>();
  auto* mp = mask.data_ptr<float>();
  const int64_t T = tokens.size(1);
  int64_t length = 2;
  for (int64_t i = 0; i < N; ++i) {
    const auto& prompt = reqs[i].prompt;
    const auto& comp = res.completions[i].tokens;
    const int64_t n = static_cast<int64_t>(prompt.size() + comp.size());
    TORCH_CHECK(n <= T, "grpo: a rollout of ", n, " tokens exceeds the context ", T);
    for (size_t k = 0; k < prompt.size(); ++k) tp[i * T + static_cast<int64_t>(k)] = prompt[k];
    for (size_t k = 0; k < comp.size(); ++k) tp[i * T + static_cast<int64_t>(prompt.size() + k)] = comp[k];
    for (int64_t t = static_cast<int64_t>(prompt.size()) - 1; t < n - 1; ++t) mp[i * (T - 1) + t] = 1;
    length = std::max(length, n);
  }
  state_->tokens.copy_(tokens);
  state_->mask.copy_(mask);
  state_->advantages.copy_(adv);
  state_->info.copy_(torch::tensor({batch, length}, torch::kLong));
  if (g.num_iterations > 1) {  // the old policy's log-probabilities, before this batch's updates
    state_->policy->eval();
    state_->old_logp.narrow(1, 0, length - 1).copy_(token_logp(state_->policy, length, nullptr));
    state_->policy->train();
  }
  if (state_->reference)
    state_->ref_logp.narrow(1, 0, length - 1).copy_(token_logp(state_->reference, length, nullptr));

  // Groups of equal rewards: a std of 0 up to the rounding of their mean.
  const auto group_std = rewards.std(1);
  metrics["reward"] = mean(total);
  metrics["reward_std"] = group_std.mean().item<double>();
  metrics["rewards/format/mean"] = mean(fmt_r);
  metrics["rewards/format/std"] = stddev(fmt_r);
  metrics["rewards/accuracy/mean"] = mean(acc_r);
  metrics["rewards/accuracy/std"] = stddev(acc_r);
  metrics["accuracy"] = mean(solved);
  metrics["frac_reward_zero_std"] = (group_std <= 1e-9).to(torch::kDouble).mean().item<double>();
  metrics["completions/mean_length"] = mean(lengths);
  metrics["completions/min_length"] = *std::min_element(lengths.begin(), lengths.end());
  metrics["completions/max_length"] = *std::max_element(lengths.begin(), lengths.end());
  // Dr. GRPO's claim is about these: per-sequence normalisation lengthens the wrong answers.
  if (!right_len.empty()) metrics["completions/mean_length_correct"] = mean(right_len);
  if (!wrong_len.empty()) metrics["completions/mean_length_incorrect"] = mean(wrong_len);
  metrics["completions/clipped_ratio"] = static_cast<double>(clipped) / static_cast<double>(N);
  metrics["sample_seconds"] = sample_s;
  metrics["sample_tokens_per_s"] = sample_s > 0 ? static_cast<double>(generated) / sample_s : 0.0;
  last_note_ = fmt::format("reward {:.3f} acc {:.3f} len {:.1f}", mean(total), mean(solved), mean(lengths));
}

train::StepResult GrpoObjective::step(int64_t step, bool inject_nan) {
  const auto& g = cfg_.grpo;
  const int64_t batch = step / g.num_iterations;
  train::StepResult r;
  const auto t_start = std::chrono::steady_clock::now();
  if (state_->info[0].item<int64_t>() != batch) sample(batch, r.metrics);
  const double sample_s = seconds_since(t_start);

  const auto t0 = std::chrono::steady_clock::now();
  const int64_t length = state_->info[1].item<int64_t>();
  double entropy = 0;
  auto logp = token_logp(state_->policy, length, &entropy);
  auto mask = state_->mask.narrow(1, 0, length - 1);
  auto old = g.num_iterations > 1 ? state_->old_logp.narrow(1, 0, length - 1) : logp.detach();
  std::optional<torch::Tensor> ref;
  if (state_->reference) ref = state_->ref_logp.narrow(1, 0, length - 1);
  auto [loss, stats] = ops::grpo_loss(logp, old, state_->advantages, mask, ref, g.beta, g.epsilon,
                                      g.epsilon_high > 0 ? std::optional<double>(g.epsilon_high) : std::nullopt,
                                      g.loss_type, g.importance_sampling, g.max_completion_length, g.clip);
  if (inject_nan) loss = loss * std::nan("");
  r.loss = loss.item<double>();
  if (std::isfinite(r.loss)) loss.backward();
  const double train_s = seconds_since(t0);
  last_tokens_ = static_cast<int64_t>(mask.sum().item<double>());

  auto st = stats.to(torch::kCPU);
  const auto* s = st.data_ptr<float>();
  r.metrics["clip_ratio/low_mean"] = s[0];
  r.metrics["clip_ratio/high_mean"] = s[1];
  r.metrics["clip_ratio/region_mean"] = s[2];
  if (g.beta > 0) r.metrics["kl"] = s[3];  // to the frozen reference, which exists only then
  r.metrics["ratio"] = s[4];
  r.metrics["entropy"] = entropy;
  r.metrics["num_tokens"] = last_tokens_;
  r.metrics["iteration"] = step % g.num_iterations;
  r.metrics["train_tokens_per_s"] = train_s > 0 ? static_cast<double>(last_tokens_) / train_s : 0.0;
  r.metrics["sample_share"] = sample_s / std::max(sample_s + train_s, 1e-12);
  r.note = last_note_;
  return r;
}

std::optional<train::StepResult> GrpoObjective::evaluate() {
  torch::NoGradGuard ng;
  const auto& g = cfg_.grpo;
  const auto problems = task_.problems(Split::kHeldout, Level::kRl, 0, g.eval_problems);
  const int64_t n = g.eval_problems, k = g.eval_k;
  std::vector<nn::GenerateRequest> greedy(static_cast<size_t>(n)), sampled;
  for (int64_t i = 0; i < n; ++i) greedy[i].prompt = nn::bytes_to_tokens(problems[i].prompt);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      sampled.push_back({greedy[i].prompt, mix_seed({static_cast<uint64_t>(cfg_.seed), kEvalStream,
                                                     static_cast<uint64_t>(i), static_cast<uint64_t>(j)})});
  auto g_out = generate_chunked(state_->policy, greedy, sampling_options(cfg_, 0.0));
  double solved = 0, formatted = 0, length = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::string text = nn::tokens_to_bytes(g_out[i].tokens);
    solved += correct(cfg_.task, problems[i], text);
    formatted += format_reward(text);
    length += static_cast<double>(g_out[i].tokens.size());
  }
  double any = 0, sampled_solved = 0;
  if (k > 0) {
    auto s_out = generate_chunked(state_->policy, sampled, sampling_options(cfg_, g.temperature));
    for (int64_t i = 0; i < n; ++i) {
      bool hit = false;
      for (int64_t j = 0; j < k; ++j) {
        const bool ok = correct(cfg_.task, problems[i], nn::tokens_to_bytes(s_out[i * k + j].tokens));
        hit |= ok;
        sampled_solved += ok;
      }
      any += hit;
    }
  }
  state_->policy->train();
  const double dn = static_cast<double>(n);
  train::StepResult r;
  r.loss = std::nan("");
  r.metrics["eval/pass@1"] = solved / dn;
  r.metrics["eval/format_rate"] = formatted / dn;
  r.metrics["eval/mean_length"] = length / dn;
  if (k > 0) {
    r.metrics[fmt::format("eval/pass@{}", k)] = any / dn;
    r.metrics["eval/sampled_accuracy"] = sampled_solved / (dn * static_cast<double>(k));
  }
  if (std::isnan(state_->start_eval[0].item<double>()))
    state_->start_eval.copy_(
        torch::tensor({solved / dn, k > 0 ? any / dn : std::nan(""), formatted / dn, length / dn}, torch::kDouble));
  r.note = fmt::format("held-out pass@1 {:.3f}{} format {:.3f} length {:.1f}", solved / dn,
                       k > 0 ? fmt::format(" pass@{} {:.3f}", k, any / dn) : "", formatted / dn, length / dn);
  last_eval_ = r.metrics;
  return r;
}

std::string GrpoObjective::describe() const {
  const auto& g = cfg_.grpo;
  return fmt::format(
      "{}: GRPO from {}, {} parameters, task {}, {} prompts x {} samples per batch, mu {}, loss {}, beta {}, "
      "device {}",
      label_, init_desc_, state_->policy->num_parameters(), cfg_.task.name, g.prompts_per_step, g.group_size,
      g.num_iterations, g.clip ? g.loss_type : "unclipped policy gradient", g.beta, device_.str());
}

json GrpoObjective::summary() {
  const int64_t k = cfg_.grpo.eval_k;
  auto se = state_->start_eval.to(torch::kCPU);
  auto num = [](double x) { return std::isnan(x) ? json(nullptr) : json(x); };
  json s = {{"parameters", state_->policy->num_parameters()},
            {"init_from", init_desc_},
            {"device", device_.str()},
            {"task", cfg_.task.name},
            {"heldout_pass@1_start", num(se[0].item<double>())},
            {"format_rate_start", num(se[2].item<double>())},
            {"mean_length_start", num(se[3].item<double>())}};
  std::vector<std::string> cols = {"heldout_pass@1_start", "heldout_pass@1"};
  if (last_eval_.contains("eval/pass@1")) {
    s["heldout_pass@1"] = last_eval_["eval/pass@1"];
    s["format_rate"] = last_eval_["eval/format_rate"];
    s["mean_length"] = last_eval_["eval/mean_length"];
  }
  if (k > 0) {
    const std::string key = fmt::format("heldout_pass@{}", k);
    s[key + "_start"] = num(se[1].item<double>());
    if (last_eval_.contains(fmt::format("eval/pass@{}", k))) s[key] = last_eval_[fmt::format("eval/pass@{}", k)];
    cols.push_back(key + "_start");
    cols.push_back(key);
  }
  for (const char* c : {"format_rate_start", "format_rate", "mean_length_start", "mean_length"}) cols.push_back(c);
  // The training curves' start and end: means over the first and the last 10% of the steps.
  if (!metrics_path_.empty()) {
    std::vector<json> rows;
    std::ifstream in(metrics_path_);
    for (std::string line; std::getline(in, line);) {
      auto j = json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.contains("reward")) rows.push_back(std::move(j));
    }
    const size_t n = rows.size(), tenth = std::max<size_t>(1, n / 10);
    for (const char* key : {"reward", "accuracy", "completions/mean_length", "completions/mean_length_correct",
                            "completions/mean_length_incorrect", "kl", "entropy"}) {
      auto avg = [&](size_t b, size_t e) {
        double sum = 0, cnt = 0;
        for (size_t i = b; i < e; ++i)
          if (rows[i].contains(key) && rows[i][key].is_number()) sum += rows[i][key].get<double>(), ++cnt;
        return cnt > 0 ? json(sum / cnt) : json(nullptr);
      };
      if (n == 0) break;
      s[std::string(key) + "_first10"] = avg(0, tenth);
      s[std::string(key) + "_last10"] = avg(n - tenth, n);
    }
  }
  s["report_columns"] = cols;
  s["plot_keys"] = {"reward", "accuracy", "eval/pass@1", "completions/mean_length", "completions/mean_length_incorrect",
                    "kl",     "entropy"};
  return s;
}

run::RunOutcome train_grpo(const config::Config& cfg, const std::string& variant, const fs::path& run_dir,
                           bool resume) {
  check_grpo_config(cfg);
  // init_from: a run folder, else a variant (or run) beside this one in the run's folder.
  const std::string& from = cfg.grpo.init_from;
  std::error_code ec;
  fs::path path = from;
  if (!train::is_hf_ref(from) && !fs::is_directory(path, ec)) {
    const fs::path sibling = run_dir.parent_path() / from;
    if (!fs::is_directory(sibling, ec))
      throw config::ConfigError(
          fmt::format("grpo.init_from: '{}': no such run folder (nor {})", from, sibling.string()));
    path = sibling;
  }
  train::TrainedRun init;
  try {
    init = train::resolve_run({path.string(), -1});
  } catch (const config::ConfigError& e) {
    throw config::ConfigError(std::string("grpo.init_from: ") + e.what());
  }
  // The policy is the base model: its model section and context replace the variant's.
  config::Config c = cfg;
  c.model = init.config.model;
  c.data.seq_len = init.config.data.seq_len;
  try {
    check_grpo_config(c);
  } catch (const config::ConfigError& e) {
    throw config::ConfigError(fmt::format("grpo.init_from: {} (with the model of {})", e.what(), init.config_path));
  }
  GrpoObjective objective(c, variant, init);
  const run::RunFolder folder(run_dir);
  objective.set_metrics_path(folder.metrics_path());
  return train::train_loop(objective, c, variant, folder, resume);
}

}  // namespace ts::rl
