#include "csrc/train/loop.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <memory>

#include "csrc/nn/layers.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/optim.h"
#include "csrc/train/progress.h"
#include "csrc/util/fs.h"

namespace ts::train {

namespace fs = std::filesystem;
using nlohmann::json;
using run::RunStatus;

double Objective::grad_norm() { return std::sqrt(grad_sq_norm(trainable())); }

namespace {

// Counters that survive a resume, in the checkpoint's state.json (NaN is stored as null).
struct Carried {
  double last_loss = std::nan(""), last_val = std::nan(""), best_val = std::nan(""), train_seconds = 0;
  int64_t skipped = 0;
  int64_t tokens = -1;  // trained on so far; -1: a checkpoint from before this count (steps x tokens per step)

  static double number(const json& j, const char* k, double fallback) {
    return j.contains(k) && j[k].is_number() ? j[k].get<double>() : fallback;
  }
  void load(const json& j) {
    last_loss = number(j, "last_loss", std::nan(""));
    last_val = number(j, "last_val_loss", std::nan(""));
    best_val = number(j, "best_val_loss", std::nan(""));
    train_seconds = number(j, "train_seconds", 0.0);
    skipped = j.value("skipped_steps", int64_t{0});
    tokens = j.value("tokens", int64_t{-1});
  }
  json save(const config::Config& cfg, const std::string& variant) const {
    return {{"last_loss", last_loss},
            {"last_val_loss", last_val},
            {"best_val_loss", best_val},
            {"skipped_steps", skipped},
            {"train_seconds", train_seconds},
            {"variant", variant},
            {"seed", cfg.seed},
            {"tokens", tokens}};
  }
};

}  // namespace

run::RunOutcome train_loop(Objective& obj, const config::Config& cfg, const std::string& variant,
                           const run::RunFolder& folder, bool resume) {
  const auto wall_start = std::chrono::steady_clock::now();
  const auto& tc = cfg.train;
  const bool lead = obj.lead();
  nn::set_fused_kernels(tc.fused);
  auto params = obj.trainable();
  auto opt = make_adamw(params, tc);

  const std::string shard = obj.checkpoint_shard();
  const fs::path ckpt_root = shard.empty() ? folder.checkpoints() : folder.checkpoints() / shard;
  int64_t step = 0;
  Carried carried;
  std::string resumed_note;  // a fallback past damaged checkpoints, said again beside "resuming at"
  if (resume) {
    if (auto info = obj.load_checkpoint(ckpt_root, *opt)) {
      step = info->step;
      carried.load(info->state);
      resumed_note = info->fallback;
    }
  } else {
    if (lead || !shard.empty()) util::remove_all(ckpt_root);  // a shared folder: its lead's to clear
    if (lead) fs::remove(folder.summary_path());
    obj.barrier();
  }
  if (auto [lo, hi] = obj.min_max(step); lo != hi)
    throw std::runtime_error(fmt::format(
        "{}: the ranks' latest checkpoints are of steps {} to {} (a save was cut short on some rank): remove the "
        "newer step folders under {} and resume again",
        folder.dir().string(), lo, hi, folder.checkpoints().string()));
  std::unique_ptr<run::MetricsLog> metrics;
  if (lead) {
    folder.write_config(cfg);
    metrics = std::make_unique<run::MetricsLog>(folder.metrics_path(), resume ? step : -1);
  }

  const std::string label = cfg.name + "/" + variant;
  Progress progress(label, tc.steps, step, /*quiet=*/!lead);
  progress.message(obj.describe() + (step ? fmt::format(", resuming at step {}", step) : ""));
  if (!resumed_note.empty()) progress.message(label + ": " + resumed_note);

  if (carried.tokens < 0) carried.tokens = step * obj.tokens_per_step();
  RunStatus status = RunStatus::kCompleted;
  std::string nonfinite_msg;
  auto checkpoint = [&] { obj.save_checkpoint(ckpt_root, step, *opt, carried.save(cfg, variant)); };
  auto run_eval = [&] {
    auto ev = obj.evaluate();
    if (!ev) return;
    json line = {{"step", step}};
    std::string text = fmt::format("{}: step {}", label, step);
    if (!std::isnan(ev->loss)) {
      carried.last_val = ev->loss;
      if (!(carried.best_val <= carried.last_val)) carried.best_val = carried.last_val;
      line["val_loss"] = ev->loss;
      text += fmt::format(" val_loss {:.4f}", ev->loss);
    }
    line.update(ev->metrics);
    if (metrics) metrics->write(line);
    progress.message(text + (ev->note.empty() ? "" : " " + ev->note));
  };
  if (step == 0 && obj.evaluate_at_start()) run_eval();

  while (step < tc.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = lr_at(tc, step);
    set_lr(*opt, lr);
    opt->zero_grad();
    StepResult r = obj.step(step, step == tc.debug_nan_step);
    double gnorm = std::nan("");
    bool finite = std::isfinite(r.loss);
    if (finite) {
      gnorm = obj.grad_norm();
      finite = std::isfinite(gnorm);
    }
    if (!finite) {
      const bool loss_ok = std::isfinite(r.loss);
      nonfinite_msg = fmt::format("step {}: non-finite {} ({})", step + 1, loss_ok ? "gradient norm" : "loss",
                                  loss_ok ? gnorm : r.loss);
      if (tc.on_nonfinite == "stop") {
        progress.message(label + ": " + nonfinite_msg + "; stopping (the last checkpoint is kept intact)");
        status = RunStatus::kNonFinite;
        break;
      }
      progress.message(label + ": " + nonfinite_msg + "; skipping the update (train.on_nonfinite: skip)");
      ++carried.skipped;
      opt->zero_grad();
    } else {
      if (tc.fused) {
        adamw_step(*opt, clip_factor(gnorm, tc.grad_clip));
      } else {
        clip_gradients(params, gnorm, tc.grad_clip);
        opt->step();
      }
      obj.after_optimizer_step();
      carried.last_loss = r.loss;
    }
    ++step;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    carried.train_seconds += dt;
    const int64_t step_tokens = obj.tokens_per_step();
    carried.tokens += step_tokens;
    const double tps = static_cast<double>(step_tokens) / std::max(dt, 1e-9);
    json line = {{"step", step}, {"loss", r.loss}, {"lr", lr}, {"grad_norm", gnorm}, {"tokens_per_s", tps}};
    line.update(r.metrics);
    if (metrics) metrics->write(line);
    progress.update(step, r.loss, tps, tc.log_every, r.note);

    if (step % tc.eval_every == 0 || step == tc.steps) run_eval();
    const bool stop_here = tc.stop_at > 0 && step == tc.stop_at && step < tc.steps;
    const bool interrupted = obj.any(run::interrupt_flag().load());
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
  run::RunOutcome out;
  out.status = status;
  const double ts = carried.train_seconds;
  out.summary = {{"name", cfg.name},
                 {"variant", variant},
                 {"kind", cfg.kind},
                 {"status", run::status_name(status)},
                 {"steps", step},
                 {"tokens_per_step", step > 0 ? carried.tokens / step : obj.tokens_per_step()},
                 {"final_train_loss", carried.last_loss},
                 {"final_val_loss", carried.last_val},
                 {"best_val_loss", carried.best_val},
                 {"skipped_steps", carried.skipped},
                 {"train_seconds", ts},
                 {"tokens_per_s", ts > 0 ? static_cast<double>(carried.tokens) / ts : 0.0},
                 {"wall_seconds_this_invocation", wall}};
  if (!nonfinite_msg.empty()) out.summary["error"] = nonfinite_msg;
  out.summary.update(obj.summary());
  if (lead) folder.write_summary(out.summary);
  return out;
}

}  // namespace ts::train
