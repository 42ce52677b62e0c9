#include "csrc/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <fmt/format.h>

#include <cmath>

#include "csrc/run/device.h"
#include "csrc/train/trained_run.h"

namespace ts::train {

using nlohmann::json;

void check_pretrain_config(const config::Config& cfg) {
  if (cfg.parallel.expert > 1)
    throw config::InvalidKeys({"parallel.expert"},
                              fmt::format("{} needs several processes; kind pretrain trains on one (expert "
                                          "parallelism runs in kind moe_ep: tinyseek launch --nproc N "
                                          "configs/moe_ep_parity.yaml)",
                                          cfg.parallel.expert));
  if (cfg.precision.kind == "bf16" && !run::pick_device(cfg.train).is_cuda())
    throw config::InvalidKeys({"precision.kind", "train.device"},
                              "'bf16' runs as autocast on CUDA; this run is on CPU (use fp32)");
  if (!cfg.train.init_from.empty()) check_init_from(cfg.train.init_from, cfg, "train.init_from");
}

namespace {
torch::Device configured_device(const config::Config& cfg) {
  if (cfg.train.threads > 0) torch::set_num_threads(static_cast<int>(cfg.train.threads));
  return run::pick_device(cfg.train);
}
}  // namespace

LanguageModelObjective::LanguageModelObjective(const config::Config& cfg, const std::string& variant)
    : cfg_(cfg),
      label_(cfg.name + "/" + variant),
      device_(configured_device(cfg)),
      autocast_(cfg.precision.kind == "bf16"),
      data_(load_data(cfg)) {
  check_pretrain_config(cfg);
  if (data_.max_token >= cfg.model.vocab_size)
    throw config::InvalidKeys({"model.vocab_size"}, fmt::format("the data holds token id {}, expected vocab_size > {}",
                                                                data_.max_token, data_.max_token));
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  model_ = nn::Transformer(cfg);
  // A resumed run overwrites these weights with its checkpoint's.
  if (!cfg.train.init_from.empty()) init_weights_from(cfg.train.init_from, cfg, *model_, "train.init_from");
  model_->to(device_);
  model_->train();
}

nn::ModelOutputs LanguageModelObjective::forward(const torch::Tensor& inputs) {
  at::autocast::set_autocast_enabled(at::kCUDA, autocast_);
  if (autocast_) at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  auto out = model_->forward_outputs(inputs.to(device_));
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  return out;
}

StepResult LanguageModelObjective::step(int64_t step, bool inject_nan) {
  const auto& tc = cfg_.train;
  auto batch = train_batch(data_.train, tc.batch_size, cfg_.data.seq_len, static_cast<uint64_t>(cfg_.seed), step);
  const auto inputs = batch.inputs.to(device_);
  at::autocast::set_autocast_enabled(at::kCUDA, autocast_);
  if (autocast_) at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  nn::LmLoss parts;
  auto h = model_->run_blocks(model_->embed_tokens(inputs), 0, model_->n_layers());
  auto loss = model_->head_objective(h, inputs, batch.targets.to(device_), model_->mtp_loss_weight(step), &parts);
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  if (inject_nan) loss = loss * std::nan("");
  StepResult r;
  // "loss" is the main next-token loss, comparable with and without MTP; what is minimized adds
  // the MTP losses, and a non-finite value of that is what the loop sees.
  const double objective = loss.item<double>();
  r.loss = std::isfinite(objective) ? parts.main.item<double>() : objective;
  auto aux = model_->aux_loss(0, model_->n_layers());  // the main blocks' MoE balance losses, if any
  if (std::isfinite(r.loss)) (aux.defined() ? loss + aux : loss).backward();
  if (aux.defined() || parts.mtp_aux.defined())
    r.metrics["aux_loss"] =
        (aux.defined() ? aux.item<double>() : 0.0) + (parts.mtp_aux.defined() ? parts.mtp_aux.item<double>() : 0.0);
  for (size_t k = 0; k < parts.depth.size(); ++k)
    r.metrics[fmt::format("mtp_loss/{}", k + 1)] = parts.depth[k].item<double>();
  if (!parts.depth.empty()) r.metrics["mtp_loss_weight"] = model_->mtp_loss_weight(step);
  r.metrics.update(nn::take_moe_stats(model_->moe_layers(), "maxvio_batch", true));
  return r;
}

std::optional<StepResult> LanguageModelObjective::evaluate() {
  torch::NoGradGuard ng;
  model_->eval();
  nn::take_moe_stats(model_->moe_layers(), "maxvio_global", false);  // start the count at zero
  const int64_t n = cfg_.train.eval_batches, D = model_->mtp_depth();
  double total = 0;
  std::vector<double> depth_loss(static_cast<size_t>(D)), depth_acc(static_cast<size_t>(D));
  for (int64_t i = 0; i < n; ++i) {
    auto b = val_batch(data_.val, cfg_.train.batch_size, cfg_.data.seq_len, i, n);
    const auto targets = b.targets.to(device_);
    const auto out = forward(b.inputs);
    const auto losses = nn::TransformerImpl::lm_loss(out, targets);
    total += losses.main.item<double>();
    const int64_t T = targets.size(1);
    for (int64_t k = 1; k <= D; ++k) {
      depth_loss[k - 1] += losses.depth[k - 1].item<double>();
      depth_acc[k - 1] +=
          nn::TransformerImpl::accuracy(out.mtp_logits[k - 1], targets.narrow(1, k, T - k)).item<double>();
    }
  }
  model_->train();
  StepResult r;
  r.loss = total / n;
  r.metrics = nn::take_moe_stats(model_->moe_layers(), "maxvio_global", false);
  last_eval_moe_ = r.metrics;
  last_eval_mtp_ = nlohmann::json::object();
  for (int64_t k = 1; k <= D; ++k) {
    last_eval_mtp_[fmt::format("val_mtp_loss/{}", k)] = depth_loss[k - 1] / n;
    last_eval_mtp_[fmt::format("val_mtp_acc/{}", k)] = depth_acc[k - 1] / n;
  }
  r.metrics.update(last_eval_mtp_);
  return r;
}

std::string LanguageModelObjective::describe() const {
  return fmt::format("{}: {} parameters, data: {}, device {}, unigram entropy {:.4f} nats", label_,
                     model_->num_parameters(), data_.description, device_.str(), data_.unigram_entropy);
}

json LanguageModelObjective::summary() {
  json s = {{"parameters", model_->num_parameters()},
            {"unigram_entropy", data_.unigram_entropy},
            {"kv_cache_values_per_token", model_->kv_cache_values_per_token()},
            {"device", device_.str()},
            {"data", data_.description}};
  if (last_eval_moe_.contains("maxvio_global")) {
    s["maxvio_global"] = last_eval_moe_["maxvio_global"];
    s["maxvio_global_layers"] = last_eval_moe_["maxvio_global_layers"];
    s["report_columns"].push_back("maxvio_global");  // extra columns of `tinyseek report`
    s["plot_keys"].push_back("maxvio_batch");        // extra plots of `tinyseek report`
  }
  for (const auto& [key, value] : last_eval_mtp_.items()) {
    s[key] = value;
    s["report_columns"].push_back(key);
  }
  if (model_->mtp_depth() > 0) s["plot_keys"].push_back("mtp_loss/1");
  return s;
}

run::RunOutcome train_variant(const config::Config& cfg, const std::string& variant,
                              const std::filesystem::path& run_dir, bool resume) {
  LanguageModelObjective objective(cfg, variant);
  return train_loop(objective, cfg, variant, run::RunFolder(run_dir), resume);
}

}  // namespace ts::train
