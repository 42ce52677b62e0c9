#include "csrc/train/trainer.h"
#include "csrc/util/fs.h"

#include <ATen/autocast_mode.h>

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include "csrc/nn/transformer.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/data.h"
#include "csrc/train/progress.h"

namespace ts::train {

namespace fs = std::filesystem;
using nlohmann::json;

std::atomic<bool>& interrupt_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

double lr_at(const config::TrainConfig& t, int64_t step) {
  if (step < t.warmup_steps) return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  const double span = std::max<int64_t>(1, t.steps - t.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - t.warmup_steps) / span);
  const double min_lr = t.lr * t.min_lr_ratio;
  return min_lr + 0.5 * (t.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

namespace {

torch::Device pick_device(const config::TrainConfig& t) {
  if (t.device == "cpu") return torch::kCPU;
  if (t.device == "cuda") {
    if (!torch::cuda::is_available())
      throw config::ConfigError("train.device: 'cuda' was requested but no CUDA device is available");
    return torch::kCUDA;
  }
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

// Metrics file: one JSON object per line. On resume, lines past the checkpoint's step are dropped
// so the file reads as if the run had never stopped.
class Metrics {
 public:
  Metrics(const fs::path& path, int64_t keep_through_step) : path_(path) {
    if (keep_through_step >= 0 && fs::exists(path)) {
      std::ifstream in(path);
      std::string kept, line;
      while (std::getline(in, line)) {
        if (line.empty()) continue;
        if (json::parse(line).value("step", int64_t{0}) <= keep_through_step) kept += line + "\n";
      }
      atomic_write(path, kept);
    } else {
      atomic_write(path, "");
    }
    out_.open(path, std::ios::app);
  }
  void write(const json& j) {
    out_ << j.dump() << "\n";
    out_.flush();
  }

 private:
  fs::path path_;
  std::ofstream out_;
};

struct EvalResult {
  double loss;
  json moe;  // MoE load statistics over the whole validation pass (maxvio_global); empty when dense
};

EvalResult evaluate(nn::Transformer& model, const TokenData& data, const config::Config& cfg, const torch::Device& dev,
                    bool autocast) {
  torch::NoGradGuard ng;
  model->eval();
  nn::take_moe_stats(model->moe_layers(), "maxvio_global", false);  // start the count at zero
  double total = 0;
  const int64_t n = cfg.train.eval_batches;
  for (int64_t i = 0; i < n; ++i) {
    auto b = val_batch(data.val, cfg.train.batch_size, cfg.data.seq_len, i, n);
    at::autocast::set_autocast_enabled(at::kCUDA, autocast);
    auto logits = model->forward(b.inputs.to(dev));
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    total += nn::TransformerImpl::loss(logits, b.targets.to(dev)).item<double>();
  }
  model->train();
  return {total / n, nn::take_moe_stats(model->moe_layers(), "maxvio_global", false)};
}

double global_grad_norm(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> norms;
  for (const auto& p : params)
    if (p.grad().defined()) norms.push_back(p.grad().to(torch::kFloat).pow(2).sum());
  if (norms.empty()) return 0;
  return std::sqrt(torch::stack(norms).sum().item<double>());
}

}  // namespace

RunOutcome train_variant(const config::Config& cfg, const std::string& variant, const fs::path& run_dir, bool resume) {
  const auto wall_start = std::chrono::steady_clock::now();
  const auto& tc = cfg.train;
  if (cfg.parallel.expert > 1)
    throw config::ConfigError(fmt::format(
        "parallel.expert: {} needs several processes; kind pretrain trains on one (expert parallelism runs in kind "
        "moe_ep: tinyseek launch --nproc N configs/moe_ep_parity.yaml)",
        cfg.parallel.expert));
  if (tc.threads > 0) torch::set_num_threads(static_cast<int>(tc.threads));
  const torch::Device dev = pick_device(tc);
  if (cfg.precision.kind == "bf16" && !dev.is_cuda())
    throw config::ConfigError("precision.kind: 'bf16' runs as autocast on CUDA; this run is on CPU (use fp32)");
  const bool autocast = cfg.precision.kind == "bf16";

  TokenData data = load_data(cfg.data);
  if (data.max_token >= cfg.model.vocab_size)
    throw config::ConfigError(fmt::format("model.vocab_size: the data holds token id {}, expected vocab_size > {}",
                                          data.max_token, data.max_token));

  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  nn::Transformer model(cfg);
  model->to(dev);

  // AdamW; no weight decay on norms (1-d parameters).
  std::vector<torch::Tensor> decay, no_decay, all_params = model->parameters();
  for (const auto& p : all_params) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  auto opts = torch::optim::AdamWOptions(tc.lr).betas({tc.beta1, tc.beta2}).eps(tc.adam_eps);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(opts).weight_decay(tc.weight_decay)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(0)));
  torch::optim::AdamW opt(std::move(groups), opts);

  fs::create_directories(run_dir);
  const fs::path ckpt_root = run_dir / "checkpoints";
  int64_t step = 0;
  json carried = json::object();  // counters that survive a resume
  if (resume) {
    if (auto info = load_latest_checkpoint(ckpt_root, *model, opt)) {
      step = info->step;
      carried = info->state;
    }
  } else {
    ts::util::remove_all(ckpt_root);
    fs::remove(run_dir / "summary.json");
  }
  atomic_write(run_dir / "config.resolved.yaml", config::to_yaml(cfg));
  Metrics metrics(run_dir / "metrics.jsonl", resume ? step : -1);

  const int64_t n_params = model->num_parameters();
  const std::string label = cfg.name + "/" + variant;
  Progress progress(label, tc.steps, step);
  progress.message(fmt::format("{}: {} parameters, data: {}, device {}, unigram entropy {:.4f} nats{}", label, n_params,
                               data.description, dev.str(), data.unigram_entropy,
                               step ? fmt::format(", resuming at step {}", step) : ""));

  const int64_t tokens_per_step = tc.batch_size * cfg.data.seq_len;
  // NaN is stored as null in JSON.
  auto carried_double = [&](const char* k) {
    return carried.contains(k) && carried[k].is_number() ? carried[k].get<double>() : std::nan("");
  };
  double last_loss = carried_double("last_loss");
  double last_val = carried_double("last_val_loss");
  double best_val = carried_double("best_val_loss");
  int64_t skipped = carried.value("skipped_steps", int64_t{0});
  double train_seconds = carried.contains("train_seconds") ? carried_double("train_seconds") : 0.0;
  RunStatus status = RunStatus::kCompleted;
  std::string nonfinite_msg;

  auto state_json = [&] {
    return json{{"last_loss", last_loss},   {"last_val_loss", last_val},      {"best_val_loss", best_val},
                {"skipped_steps", skipped}, {"train_seconds", train_seconds}, {"variant", variant},
                {"seed", cfg.seed}};
  };
  auto checkpoint = [&] { save_checkpoint(ckpt_root, step, *model, opt, state_json()); };
  json last_moe_eval = json::object();
  auto run_eval = [&] {
    auto ev = evaluate(model, data, cfg, dev, autocast);
    last_val = ev.loss;
    if (!(best_val <= last_val)) best_val = last_val;
    last_moe_eval = ev.moe;
    json line = {{"step", step}, {"val_loss", last_val}};
    line.update(ev.moe);
    metrics.write(line);
    progress.message(fmt::format("{}: step {} val_loss {:.4f}", label, step, last_val));
  };

  model->train();
  while (step < tc.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = lr_at(tc, step);
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    auto batch = train_batch(data.train, tc.batch_size, cfg.data.seq_len, static_cast<uint64_t>(cfg.seed), step);
    opt.zero_grad();
    at::autocast::set_autocast_enabled(at::kCUDA, autocast);
    if (autocast) at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    auto logits = model->forward(batch.inputs.to(dev));
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    auto loss = nn::TransformerImpl::loss(logits, batch.targets.to(dev));
    if (step == tc.debug_nan_step) loss = loss * std::nan("");
    double loss_v = loss.item<double>();
    double gnorm = std::nan("");
    bool finite = std::isfinite(loss_v);
    auto aux = model->aux_loss();  // MoE balance losses (undefined for a dense model)
    if (finite) {
      (aux.defined() ? loss + aux : loss).backward();
      gnorm = global_grad_norm(all_params);
      finite = std::isfinite(gnorm);
    }
    if (!finite) {
      nonfinite_msg =
          fmt::format("step {}: non-finite {} ({})", step + 1, std::isfinite(loss_v) ? "gradient norm" : "loss",
                      std::isfinite(loss_v) ? gnorm : loss_v);
      if (tc.on_nonfinite == "stop") {
        progress.message(label + ": " + nonfinite_msg + "; stopping (the last checkpoint is kept intact)");
        status = RunStatus::kNonFinite;
        break;
      }
      progress.message(label + ": " + nonfinite_msg + "; skipping the update (train.on_nonfinite: skip)");
      ++skipped;
      opt.zero_grad();
    } else {
      if (tc.grad_clip > 0 && gnorm > tc.grad_clip) {
        torch::NoGradGuard ng;
        for (auto& p : all_params)
          if (p.grad().defined()) p.grad().mul_(tc.grad_clip / (gnorm + 1e-6));
      }
      opt.step();
      model->after_optimizer_step();
      last_loss = loss_v;
    }
    ++step;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    train_seconds += dt;
    const double tps = tokens_per_step / std::max(dt, 1e-9);
    json line = {{"step", step}, {"loss", loss_v}, {"lr", lr}, {"grad_norm", gnorm}, {"tokens_per_s", tps}};
    if (aux.defined()) line["aux_loss"] = aux.item<double>();
    line.update(nn::take_moe_stats(model->moe_layers(), "maxvio_batch", true));
    metrics.write(line);
    progress.update(step, loss_v, tps, tc.log_every);

    if (step % tc.eval_every == 0 || step == tc.steps) run_eval();
    const bool stop_here = tc.stop_at > 0 && step == tc.stop_at && step < tc.steps;
    const bool interrupted = interrupt_flag().load();
    if (step % tc.checkpoint_every == 0 || step == tc.steps || stop_here || interrupted) checkpoint();
    if (interrupted) {
      status = RunStatus::kInterrupted;
      progress.message(
          fmt::format("{}: interrupted at step {}; checkpoint saved, continue with --resume", label, step));
      break;
    }
    if (stop_here) {
      status = RunStatus::kStopped;
      progress.message(fmt::format("{}: stopped at step {} (train.stop_at); continue with --resume", label, step));
      break;
    }
  }
  progress.finish();

  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  static const char* names[] = {"completed", "stopped", "interrupted", "nonfinite"};
  RunOutcome out;
  out.status = status;
  out.summary = {{"name", cfg.name},
                 {"variant", variant},
                 {"status", names[static_cast<int>(status)]},
                 {"steps", step},
                 {"parameters", n_params},
                 {"tokens_per_step", tokens_per_step},
                 {"final_train_loss", last_loss},
                 {"final_val_loss", last_val},
                 {"best_val_loss", best_val},
                 {"unigram_entropy", data.unigram_entropy},
                 {"kv_cache_values_per_token", model->kv_cache_values_per_token()},
                 {"skipped_steps", skipped},
                 {"train_seconds", train_seconds},
                 {"tokens_per_s", train_seconds > 0 ? step * tokens_per_step / train_seconds : 0.0},
                 {"wall_seconds_this_invocation", wall},
                 {"device", dev.str()},
                 {"data", data.description}};
  if (!nonfinite_msg.empty()) out.summary["error"] = nonfinite_msg;
  if (last_moe_eval.contains("maxvio_global")) {
    out.summary["maxvio_global"] = last_moe_eval["maxvio_global"];
    out.summary["maxvio_global_layers"] = last_moe_eval["maxvio_global_layers"];
    out.summary["report_columns"].push_back("maxvio_global");  // extra columns of `tinyseek report`
    out.summary["plot_keys"].push_back("maxvio_batch");        // extra plots of `tinyseek report`
  }
  atomic_write(run_dir / "summary.json", out.summary.dump(2) + "\n");
  return out;
}

}  // namespace ts::train
