#include "csrc/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "csrc/nn/cost.h"
#include "csrc/parallel/data_parallel.h"
#include "csrc/parallel/expert_parallel.h"
#include "csrc/parallel/pipeline_train.h"
#include "csrc/run/device.h"
#include "csrc/run/kinds.h"
#include "csrc/train/optim.h"
#include "csrc/train/trained_run.h"

namespace ts::train {

using nlohmann::json;

namespace {

// A lower bound of the memory pretraining on the CPU needs on this machine: per rank, fp32 weights,
// gradients and AdamW's two moments (16 bytes a parameter), and the activations the backward keeps
// (per token and block at least its input, q, k, v, the attention output and the FFN's hidden
// activations; per token and output head the logits, their log-softmax and its gradient; 4 bytes
// each), times the ranks launched on this machine. Only sizes beyond the machine are refused,
// before anything is allocated or written; what a run really needs is higher. The error names
// first the keys of the largest term.
void check_memory(const config::Config& cfg, int world) {
  if (run::pick_device(cfg.train).is_cuda()) return;  // the GPU's memory: not estimated
  const auto& m = cfg.model;
  const auto cost = nn::model_cost(cfg);
  const double params = static_cast<double>(cost.total_parameters + cost.mtp_parameters);
  const double ffn = m.ffn == "moe" ? static_cast<double>(m.moe.top_k + m.moe.n_shared_experts) *
                                          static_cast<double>(m.moe.expert_hidden)
                                    : static_cast<double>(m.ffn_hidden);
  const double tokens = static_cast<double>(cfg.train.batch_size) / world * static_cast<double>(cfg.data.seq_len);
  const double blocks = static_cast<double>(m.n_layers + m.mtp.depth);
  const double state = 16 * params;
  // Logits per head (main and each MTP depth): the logits, their log-softmax and its gradient.
  const double heads = static_cast<double>(1 + m.mtp.depth);
  const double block_acts = 4 * tokens * blocks * (6.0 * static_cast<double>(m.d_model) + 3 * ffn);
  const double logit_acts = 4 * tokens * 3 * heads * static_cast<double>(m.vocab_size);
  const double acts = block_acts + logit_acts;
  const char* lw = std::getenv("LOCAL_WORLD_SIZE");
  const int local = lw && *lw ? std::max(1, std::atoi(lw)) : world;
  const double need = (state + acts) * local;
  const double have = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  constexpr double GiB = 1024.0 * 1024 * 1024;
  if (have > 0 && need > have)
    throw config::InvalidKeys(
        state >= std::max(block_acts, logit_acts)
            ? std::vector<std::string>{"model.d_model", "model.n_layers", "model.vocab_size", "train.batch_size"}
        : logit_acts > 2 * block_acts
            ? std::vector<std::string>{"model.vocab_size", "train.batch_size", "data.seq_len", "model.d_model"}
            : std::vector<std::string>{"train.batch_size", "data.seq_len", "model.d_model", "model.vocab_size"},
        fmt::format("training needs at least {:.1f} GiB{}: {:.3g} parameters take {:.1f} GiB with their gradients and "
                    "AdamW state, the activations of {:.3g} tokens per rank {:.1f} GiB; this machine has {:.1f} GiB",
                    need / GiB, local > 1 ? fmt::format(" for its {} ranks", local) : "", params, state / GiB, tokens,
                    acts / GiB, have / GiB));
}

}  // namespace

void check_pretrain_config(const config::Config& cfg, int world) {
  const auto& p = cfg.parallel;
  if (p.data != 0 && p.data != world)
    throw config::InvalidKeys({"parallel.data"},
                              fmt::format("{} data-parallel ranks, but this job has {} (WORLD_SIZE); pretraining is "
                                          "data-parallel over all of them (0 = the world size)",
                                          p.data, world));
  const int64_t ep = std::max<int64_t>(p.expert, 1);
  if (ep > 1) {
    if (cfg.model.ffn != "moe")
      throw config::InvalidKeys({"parallel.expert", "model.ffn"},
                                "expert parallelism splits the routed experts; model.ffn is '" + cfg.model.ffn + "'");
    if (world % ep)
      throw config::InvalidKeys(
          {"parallel.expert"},
          world == 1 ? fmt::format("{} needs a job of a multiple of {} ranks: tinyseek launch --nproc N CONFIG, or "
                                   "torchrun --nproc-per-node N --no-python tinyseek run CONFIG",
                                   ep, ep)
                     : fmt::format("{} does not divide the {} ranks of this job", ep, world));
    if (cfg.model.moe.n_routed_experts % ep)
      throw config::InvalidKeys({"model.moe.n_routed_experts", "parallel.expert"},
                                fmt::format("expert parallelism over {} ranks needs a multiple of {}, got {}", ep, ep,
                                            cfg.model.moe.n_routed_experts));
  }
  if (world > 1 && cfg.train.batch_size % world)
    throw config::InvalidKeys({"train.batch_size"}, fmt::format("{} sequences do not split over the {} ranks of this "
                                                                "job (each trains on batch_size / ranks)",
                                                                cfg.train.batch_size, world));
  if (cfg.precision.kind == "bf16" && !run::pick_device(cfg.train).is_cuda())
    throw config::InvalidKeys({"precision.kind", "train.device"},
                              "'bf16' runs as autocast on CUDA; this run is on CPU (use fp32)");
  check_memory(cfg, world);
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
  world_ = run::launch_world_size();
  check_pretrain_config(cfg, world_);
  if (world_ > 1) {
    dist_ = parallel::process_dist(cfg);
    rank_ = dist_->rank();
    device_ = dist_->device();
  }
  if (data_.max_token >= cfg.model.vocab_size)
    throw config::InvalidKeys({"model.vocab_size"}, fmt::format("the data holds token id {}, expected vocab_size > {}",
                                                                data_.max_token, data_.max_token));
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  model_ = nn::Transformer(cfg);
  // A resumed run overwrites these weights with its checkpoint's.
  if (!cfg.train.init_from.empty()) init_weights_from(cfg.train.init_from, cfg, *model_, "train.init_from");
  model_->to(device_);
  model_->train();
  if (dist_) setup_parallel();
}

LanguageModelObjective::~LanguageModelObjective() = default;

void LanguageModelObjective::setup_parallel() {
  ep_ = std::max<int64_t>(cfg_.parallel.expert, 1);
  const int n = static_cast<int>(ep_);
  const parallel::Group* replicas = nullptr;  // the ranks holding the same experts
  if (ep_ > 1) {
    // Expert-parallel groups of n consecutive ranks, as kind moe_ep: rank r holds slice r % n.
    ep_group_ = &dist_->group(parallel::consecutive_ranks(rank_, n));
    replicas = &dist_->group(parallel::strided_ranks(rank_, n, world_));
    for (const auto& moe : model_->moe_layers()) {
      parallel::shard_experts(*moe, *dist_, *ep_group_);
      expert_params_.insert(moe->w13->weight.unsafeGetTensorImpl());
      expert_params_.insert(moe->w2->weight.unsafeGetTensorImpl());
    }
  }
  std::vector<parallel::SyncedParam> params;
  for (const auto& p : model_->named_parameters()) {
    const bool expert = expert_params_.count(p.value().unsafeGetTensorImpl()) > 0;
    if (expert) expert_names_.push_back(p.key());
    params.push_back({p.value(), expert ? replicas : nullptr});
  }
  parallel::GradSyncOptions o;
  o.bucket_bytes = static_cast<int64_t>(cfg_.dist.grad_bucket_mb * (1 << 20));
  o.overlap = cfg_.dist.overlap_grad_sync;
  sync_ = std::make_unique<parallel::GradSync>(*dist_, std::move(params), 1.0 / world_, o);
}

torch::Tensor LanguageModelObjective::my_rows(const torch::Tensor& batch) const {
  if (!dist_) return batch;
  const int64_t rows = batch.size(0) / world_;
  return batch.narrow(0, rank_ * rows, rows);
}

std::vector<double> LanguageModelObjective::mean_over_ranks(std::vector<double> values) {
  if (!dist_ || values.empty()) return values;
  std::vector<at::Tensor> t{torch::tensor(values, torch::kDouble).to(device_)};
  dist_->all_reduce(t);
  auto sum = t[0].cpu();
  for (size_t i = 0; i < values.size(); ++i) values[i] = sum[static_cast<int64_t>(i)].item<double>() / world_;
  return values;
}

bool LanguageModelObjective::any(bool local) { return dist_ ? dist_->any(local) : local; }

std::pair<int64_t, int64_t> LanguageModelObjective::min_max(int64_t v) {
  return dist_ ? dist_->min_max(v) : std::pair<int64_t, int64_t>{v, v};
}

void LanguageModelObjective::barrier() {
  if (dist_) dist_->barrier();
}

int64_t LanguageModelObjective::parameters() const {
  int64_t n = model_->num_parameters();  // this rank's: its slice of the routed experts
  for (const auto& p : model_->parameters())
    if (expert_params_.count(p.unsafeGetTensorImpl())) n += (ep_ - 1) * p.numel();
  return n;
}

ShardLayout LanguageModelObjective::shard_layout() const {
  ShardLayout l;
  l.rank = rank_;
  l.shards = static_cast<int>(ep_);
  l.shard = static_cast<int>(rank_ % ep_);
  l.split = expert_names_;
  return l;
}

void LanguageModelObjective::save_checkpoint(const std::filesystem::path& root, int64_t step, torch::optim::AdamW& opt,
                                             const nlohmann::json& state) {
  if (!dist_) return Objective::save_checkpoint(root, step, opt, state);
  save_sharded_checkpoint(root, step, *model_, opt, state, shard_layout(), [this] { dist_->barrier(); });
}

std::optional<CheckpointInfo> LanguageModelObjective::load_checkpoint(const std::filesystem::path& root,
                                                                      torch::optim::AdamW& opt) {
  return load_latest_checkpoint(root, *model_, opt, shard_layout());
}

double LanguageModelObjective::grad_norm() {
  if (!dist_ || ep_ == 1) return Objective::grad_norm();  // the averaged gradients are the same on every rank
  // Replicated gradients are the same everywhere; each rank of an expert-parallel group holds its
  // own experts' share of the norm.
  std::vector<torch::Tensor> replicated, experts;
  for (const auto& p : model_->parameters())
    (expert_params_.count(p.unsafeGetTensorImpl()) ? experts : replicated).push_back(p);
  std::vector<at::Tensor> t{torch::tensor({grad_sq_norm(experts)}, torch::kDouble).to(device_)};
  dist_->all_reduce(t, c10d::ReduceOp::SUM, ep_group_);
  return std::sqrt(grad_sq_norm(replicated) + t[0].item<double>());
}

void LanguageModelObjective::after_optimizer_step() {
  // The loss-free bias follows the load of the whole batch: every rank's routing, summed.
  if (dist_ && cfg_.model.ffn == "moe" && cfg_.model.moe.loss_free)
    parallel::sum_step_loads(*dist_, model_->moe_layers(), nullptr);
  model_->after_optimizer_step();
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
  const auto inputs = my_rows(batch.inputs).to(device_);
  at::autocast::set_autocast_enabled(at::kCUDA, autocast_);
  if (autocast_) at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  nn::LmLoss parts;
  auto h = model_->run_blocks(model_->embed_tokens(inputs), 0, model_->n_layers());
  auto loss =
      model_->head_objective(h, inputs, my_rows(batch.targets).to(device_), model_->mtp_loss_weight(step), &parts);
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  if (inject_nan) loss = loss * std::nan("");
  auto aux = model_->aux_loss(0, model_->n_layers());  // the main blocks' MoE balance losses, if any
  // The step's numbers, averaged over the ranks of a data-parallel job (one all-reduce): the
  // objective, the main loss, the balance losses, the MTP losses per depth.
  std::vector<double> v = {
      loss.item<double>(), parts.main.item<double>(),
      (aux.defined() ? aux.item<double>() : 0.0) + (parts.mtp_aux.defined() ? parts.mtp_aux.item<double>() : 0.0)};
  for (const auto& d : parts.depth) v.push_back(d.item<double>());
  v = mean_over_ranks(std::move(v));
  StepResult r;
  // "loss" is the main next-token loss, comparable with and without MTP; what is minimized adds
  // the MTP losses, and a non-finite value of that is what the loop sees (on every rank alike).
  r.loss = std::isfinite(v[0]) ? v[1] : v[0];
  if (std::isfinite(r.loss)) {
    if (sync_) sync_->begin();
    (aux.defined() ? loss + aux : loss).backward();
    if (sync_) {
      sync_->finish();
      sync_wait_s_ += sync_->last().wait_s;
      sync_overlapped_ += sync_->last().launched_in_backward;
      ++sync_steps_;
    }
  }
  if (aux.defined() || parts.mtp_aux.defined()) r.metrics["aux_loss"] = v[2];
  for (size_t k = 0; k < parts.depth.size(); ++k) r.metrics[fmt::format("mtp_loss/{}", k + 1)] = v[3 + k];
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
    const auto targets = my_rows(b.targets).to(device_);
    const auto out = forward(my_rows(b.inputs));
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
  {  // means over the ranks' rows
    std::vector<double> v = {total};
    v.insert(v.end(), depth_loss.begin(), depth_loss.end());
    v.insert(v.end(), depth_acc.begin(), depth_acc.end());
    v = mean_over_ranks(std::move(v));
    total = v[0];
    for (int64_t k = 0; k < D; ++k) depth_loss[k] = v[1 + k], depth_acc[k] = v[1 + D + k];
  }
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
  std::string ranks;
  if (dist_)
    ranks = fmt::format(", {} ranks ({} sequences each{})", world_, cfg_.train.batch_size / world_,
                        ep_ > 1 ? fmt::format(", experts split over groups of {}", ep_) : "");
  return fmt::format("{}: {} parameters, data: {}, device {}{}, unigram entropy {:.4f} nats", label_, parameters(),
                     data_.description, device_.str(), ranks, data_.unigram_entropy);
}

json LanguageModelObjective::summary() {
  json s = {{"parameters", parameters()},
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
  if (dist_) {
    s["ranks"] = world_;
    s["expert_parallel"] = ep_;
    s["grad_sync"] = {{"buckets", sync_->last().buckets},
                      {"wait_ms_per_step", sync_steps_ ? 1e3 * sync_wait_s_ / static_cast<double>(sync_steps_) : 0.0},
                      {"buckets_reduced_during_backward_per_step",
                       sync_steps_ ? static_cast<double>(sync_overlapped_) / static_cast<double>(sync_steps_) : 0.0}};
  }
  return s;
}

run::RunOutcome train_variant(const config::Config& cfg, const std::string& variant,
                              const std::filesystem::path& run_dir, bool resume) {
  LanguageModelObjective objective(cfg, variant);
  return train_loop(objective, cfg, variant, run::RunFolder(run_dir), resume);
}

}  // namespace ts::train
