#include "csrc/parallel/pipeline_train.h"

#include "csrc/parallel/data_parallel.h"
#include "csrc/parallel/expert_parallel.h"

#include <fmt/format.h>

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "csrc/nn/transformer.h"
#include "csrc/parallel/chart.h"
#include "csrc/parallel/executor.h"
#include "csrc/parallel/simulate_cores.h"
#include "csrc/parallel/stage_costs.h"
#include "csrc/run/device.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/data.h"
#include "csrc/train/loop.h"
#include "csrc/train/optim.h"
#include "csrc/util/fs.h"
#include "csrc/util/tensor_compare.h"

namespace ts::parallel {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::shared_ptr<Dist>& dist_slot() {
  static std::shared_ptr<Dist> d;
  return d;
}

Timeline measured_timeline(const Schedule& s, const StepResult& r, double unit) {
  Timeline tl;
  tl.spans = r.spans;
  for (auto& row : tl.spans)
    for (auto& sp : row) sp = {sp.start * unit, sp.end * unit};
  tl.total = r.seconds * unit;
  for (double b : r.busy) {
    tl.busy.push_back(b * unit);
    tl.bubble.push_back(tl.total - b * unit);
    tl.critical_bubble = std::max(tl.critical_bubble, tl.bubble.back());
  }
  tl.peak_activations = peak_activations(s);
  return tl;
}

double bubble_fraction(const std::vector<double>& busy, double total) {
  double idle = 0;
  for (double b : busy) idle += total - b;
  return total > 0 ? idle / (total * static_cast<double>(busy.size())) : 0;
}

json costs_json(const Costs& c) { return {{"F", c.F}, {"B", c.B}, {"W", c.W}, {"FB", c.FB}}; }

// Cores this process may run on (its affinity mask; the machine's count if that is unknown).
double usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max(1u, std::thread::hardware_concurrency());
}

double mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? std::nan("") : sum / static_cast<double>(v.size());
}

double median(const std::vector<double>& samples) {
  if (samples.empty()) return std::nan("");
  std::vector<double> v = samples;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

using Samples = std::map<OpKind, std::vector<double>>;  // per kind of compute; postings under kSend
using Statistic = double (*)(const std::vector<double>&);

// Simulator costs from per-kind samples: `stat` of each compute kind, the mean posting (most
// postings are short, the few long ones are the cost). Kinds the schedule never runs get
// fallbacks the simulator does not use. *bw: the fused backward's cost, < 0 when none ran.
Costs costs_from(const Samples& samples, Statistic stat, double* bw) {
  auto get = [&](OpKind k, double fallback) {
    auto it = samples.find(k);
    return it == samples.end() || it->second.empty() ? fallback : stat(it->second);
  };
  Costs c;
  c.F = get(OpKind::kF, 0);
  *bw = get(OpKind::kBW, -1);
  c.W = get(OpKind::kW, *bw > 0 ? *bw / 3 : c.F / 2);
  c.B = get(OpKind::kB, *bw > 0 ? *bw - c.W : c.F);
  c.FB = get(OpKind::kFB, c.F + c.B + c.W);
  auto it = samples.find(OpKind::kSend);
  c.post = it == samples.end() || it->second.empty() ? 0.0 : mean(it->second);
  return c;
}

// The costs of the kinds that ran (as costs_from computes them) and the posting, for summary.json.
json ran_costs_json(const Samples& samples, Statistic stat, const Costs& c) {
  json j = json::object();
  for (auto [k, name] :
       {std::pair{OpKind::kF, "F"}, {OpKind::kB, "B"}, {OpKind::kW, "W"}, {OpKind::kBW, "BW"}, {OpKind::kFB, "FB"}})
    if (auto it = samples.find(k); it != samples.end() && !it->second.empty()) j[name] = stat(it->second);
  j["post"] = c.post;
  return j;
}

}  // namespace

int launch_rank() {
  const char* r = std::getenv("RANK");
  return r && *r ? std::atoi(r) : 0;
}

std::shared_ptr<Dist> process_dist(const config::Config& cfg) {
  auto& d = dist_slot();
  if (d) return d;
  DistOptions o;
  o.backend = cfg.dist.backend;
  o.device = run::pick_device(cfg.train).is_cuda() ? "cuda" : "cpu";
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.timeout_s * 1000));
  o.heartbeat = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.heartbeat_s * 1000));
  o.dead_after = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.dead_after_s * 1000));
  d = Dist::init_from_env(o);
  return d;
}

void release_process_dist() { dist_slot().reset(); }

namespace {
// parallel.data: the W ranks form D pipelines of W / D ranks (0 = one pipeline).
int pipeline_replicas(const config::Config& cfg) { return std::max<int>(1, static_cast<int>(cfg.parallel.data)); }
}  // namespace

void check_pipeline_config(const config::Config& cfg, int world_size) {
  const int D = pipeline_replicas(cfg);
  if (world_size % D)
    throw config::InvalidKeys(
        {"parallel.data"}, fmt::format("{} pipeline replicas do not divide the {} ranks of this job", D, world_size));
  try {
    const Schedule s = make_schedule(parse_schedule_kind(cfg.pipeline.schedule), world_size / D,
                                     static_cast<int>(cfg.pipeline.microbatches));
    split_stages(cfg.model.n_layers, s.stages);
  } catch (const std::invalid_argument& e) {
    throw config::InvalidKeys(
        {"pipeline.schedule", "pipeline.microbatches", "model.n_layers"},
        fmt::format("with WORLD_SIZE={}{}: {}", world_size,
                    D > 1 ? fmt::format(" in {} pipelines of {} ranks", D, world_size / D) : "", e.what()));
  }
}

namespace {

// One rank's share of a pipelined training step, on the one training loop: the executor runs the
// schedule; the loop's optimizer trains the parameters of this rank's stages.
class PipelineObjective : public train::Objective {
 public:
  PipelineObjective(const config::Config& cfg, const std::string& variant, fs::path run_dir);

  torch::nn::Module& module() override { return *model_; }
  std::vector<torch::Tensor> trainable() override;
  train::StepResult step(int64_t step, bool inject_nan) override;
  double grad_norm() override;
  void after_optimizer_step() override;
  int64_t tokens_per_step() const override { return cfg_.train.batch_size * M_ * D_ * cfg_.data.seq_len; }
  std::string describe() const override;
  json summary() override;
  bool lead() const override { return dist_->rank() == 0; }
  std::string checkpoint_shard() const override {
    return dist_->world_size() > 1 ? fmt::format("rank_{}", dist_->rank()) : "";
  }
  bool any(bool local) override { return dist_->any(local); }
  std::pair<int64_t, int64_t> min_max(int64_t v) override { return dist_->min_max(v); }

 private:
  void measure_costs();
  void check_parity(const SequentialReference& ref, const StepResult& r);

  config::Config cfg_;
  std::string label_;
  fs::path run_dir_;  // the timeline charts go beside summary.json
  std::shared_ptr<Dist> dist_;
  int M_;
  // Data parallelism: D pipelines of P ranks each (pipeline d holds ranks d*P .. d*P+P-1);
  // a stage's copies in the D pipelines average their gradients.
  int D_ = 1, P_ = 1, replica_ = 0;
  std::vector<int> pipeline_ranks_, stage_peers_;
  const Group* pipeline_group_ = nullptr;  // D > 1: this rank's pipeline
  const Group* peers_group_ = nullptr;     // D > 1: the ranks holding this rank's stages
  Schedule schedule_;
  train::TokenData data_;
  nn::Transformer model_{nullptr};
  std::unique_ptr<PipelineExecutor> exec_;
  json summary_ = json::object();

  // Costs measured alone before training (pipeline.measure_costs).
  std::vector<StageCosts> stage_costs_;
  Costs costs_;
  // In-run durations of the measured steps (every step but the first), all ranks: computes by
  // kind (F, B, W, BW, FB); the postings of SEND and RECV pooled under kSend.
  Samples run_durations_, run_cpu_;
  std::vector<double> message_cpu_;  // per step: transport threads' CPU per message
  int messages_per_step_ = 0;
  std::vector<double> step_times_, bubbles_;
  StepResult last_;
  bool first_step_ = true;
};

PipelineObjective::PipelineObjective(const config::Config& cfg, const std::string& variant, fs::path run_dir)
    : cfg_(cfg),
      label_(cfg.name + "/" + variant),
      run_dir_(std::move(run_dir)),
      dist_(process_dist(cfg)),
      M_(static_cast<int>(cfg.pipeline.microbatches)) {
  if (cfg.train.threads > 0) torch::set_num_threads(static_cast<int>(cfg.train.threads));
  check_pipeline_config(cfg, dist_->world_size());
  D_ = pipeline_replicas(cfg);
  P_ = dist_->world_size() / D_;
  replica_ = dist_->rank() / P_;
  pipeline_ranks_ = consecutive_ranks(dist_->rank(), P_);
  stage_peers_ = strided_ranks(dist_->rank(), P_, dist_->world_size());
  if (D_ > 1) {
    pipeline_group_ = &dist_->group(pipeline_ranks_);
    peers_group_ = &dist_->group(stage_peers_);
  }
  schedule_ = make_schedule(parse_schedule_kind(cfg.pipeline.schedule), P_, M_);
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  model_ = nn::Transformer(cfg);
  model_->to(dist_->device());
  model_->train();
  data_ = train::load_data(cfg);
  if (data_.max_token >= cfg.model.vocab_size)
    throw config::InvalidKeys({"model.vocab_size"}, fmt::format("{} is too small for the data's token {}",
                                                                cfg.model.vocab_size, data_.max_token));
  ExecutorOptions eo;
  eo.p2p = cfg.pipeline.p2p;
  exec_ = std::make_unique<PipelineExecutor>(*dist_, schedule_, model_, eo, pipeline_ranks_);
  for (const auto& list : schedule_.actions)
    for (const Action& a : list) messages_per_step_ += a.op == OpKind::kSend;
  if (cfg.pipeline.measure_costs) measure_costs();
}

// Costs first, on rank 0 alone: the others wait in the broadcast, so the timing owns a core.
void PipelineObjective::measure_costs() {
  const auto& tc = cfg_.train;
  const auto dev = dist_->device();
  const auto& ranges = exec_->stages();
  auto cost_t = torch::zeros({static_cast<int64_t>(ranges.size()), 5}, torch::kDouble);
  if (lead()) {
    auto b = train::train_batch(data_.train, tc.batch_size, cfg_.data.seq_len, static_cast<uint64_t>(cfg_.seed), 0);
    stage_costs_ = measure_stage_costs(model_, ranges, b.inputs.to(dev), b.targets.to(dev),
                                       static_cast<int>(cfg_.pipeline.measure_repeats));
    for (const auto& s : stage_costs_)
      for (int k = 0; k < 5; ++k)
        cost_t[s.stage][k] = std::vector<double>{s.costs.F, s.costs.B, s.costs.W, s.costs.FB, s.BW}[k];
  }
  std::vector<at::Tensor> v{cost_t.to(dev)};
  dist_->broadcast(v, 0);
  cost_t = v[0].cpu();
  stage_costs_.clear();
  for (int s = 0; s < cost_t.size(0); ++s) {
    StageCosts c;
    c.stage = s;
    c.costs = {cost_t[s][0].item<double>(), cost_t[s][1].item<double>(), cost_t[s][2].item<double>(),
               cost_t[s][3].item<double>(), 0};
    c.BW = cost_t[s][4].item<double>();
    stage_costs_.push_back(c);
  }
  costs_ = mean_costs(stage_costs_);
  for (const auto& m : model_->moe_layers()) {  // the timing forwards are not training steps
    m->set_step_load({});
    m->take_load();
  }
}

std::vector<torch::Tensor> PipelineObjective::trainable() {
  std::vector<torch::Tensor> out;
  for (const auto& p : exec_->parameters()) out.push_back(p.tensor);
  return out;
}

std::string PipelineObjective::describe() const {
  const auto& tc = cfg_.train;
  return fmt::format("{}: {} on {} ranks ({} backend){}, {} stages, {} micro-batches of {}x{} tokens, {}", label_,
                     cfg_.pipeline.schedule, dist_->world_size(), dist_->backend_name(),
                     D_ > 1 ? fmt::format(" as {} data-parallel pipelines of {}", D_, P_) : "", schedule_.stages, M_,
                     tc.batch_size, cfg_.data.seq_len, dist_->device().str());
}

double PipelineObjective::grad_norm() {
  // Every stage counted once (DualPipe's mirrored copies are equal).
  double sq = 0;
  for (const auto& p : exec_->parameters())
    if (p.owned && p.tensor.grad().defined()) sq += p.tensor.grad().to(torch::kDouble).pow(2).sum().item<double>();
  std::vector<at::Tensor> v{torch::tensor({sq}, torch::kDouble).to(dist_->device())};
  dist_->all_reduce(v, c10d::ReduceOp::SUM, pipeline_group_);  // the replicas' gradients are equal
  return std::sqrt(v[0][0].item<double>());
}

void PipelineObjective::after_optimizer_step() {
  if (D_ > 1 && cfg_.model.ffn == "moe" && cfg_.model.moe.loss_free) {
    // The loss-free bias follows the load of the whole batch: the replicas' loads of each held
    // MoE layer summed (every copy of a stage holds the same layers in the same order).
    std::vector<std::shared_ptr<nn::MoEImpl>> held;
    for (const auto& m : model_->moe_layers())
      if (m->step_load().defined()) held.push_back(m);
    sum_step_loads(*dist_, held, peers_group_);
  }
  exec_->after_optimizer_step();
}

void PipelineObjective::check_parity(const SequentialReference& ref, const StepResult& r) {
  // Per tensor ||g_pipe - g_seq|| / ||g_seq||, worst over this rank's stages, then over ranks.
  double worst = 0;
  std::string worst_name;
  for (const auto& p : exec_->parameters()) {
    const double d = util::rel_diff(p.tensor.grad(), ref.grads.at(p.name));
    if (d > worst || worst_name.empty()) worst = d, worst_name = p.name;
  }
  const double loss_rel = std::abs(r.loss - ref.loss) / std::max(std::abs(ref.loss), 1e-30);
  std::cout << fmt::format(
                   "{}: parity on rank {}: {} gradient tensors, max rel diff {:.3e} ({}), loss {:.9f} vs "
                   "sequential {:.9f} (rel {:.3e})\n",
                   label_, dist_->rank(), exec_->parameters().size(), worst, worst_name, r.loss, ref.loss, loss_rel)
            << std::flush;
  std::vector<at::Tensor> v{torch::tensor({worst, loss_rel}, torch::kDouble).to(dist_->device())};
  dist_->all_reduce(v, c10d::ReduceOp::MAX);
  const double g_worst = v[0][0].item<double>(), l_worst = v[0][1].item<double>();
  const double tol = cfg_.pipeline.check_tolerance;
  summary_["parity"] = {{"max_grad_rel_diff", g_worst},
                        {"loss_rel_diff", l_worst},
                        {"tolerance", tol},
                        {"sequential_loss", ref.loss},
                        {"pipeline_loss", r.loss}};
  if (!(g_worst <= tol) || !(l_worst <= tol))
    throw std::runtime_error(
        fmt::format("pipeline {}: gradients or loss differ from sequential training: max grad rel "
                    "diff {:.3e}, loss rel diff {:.3e} > tolerance {:.1e}",
                    cfg_.pipeline.schedule, g_worst, l_worst, tol));
}

train::StepResult PipelineObjective::step(int64_t step, bool inject_nan) {
  const auto& tc = cfg_.train;
  const int me = dist_->rank(), R = P_;
  auto batch = train::train_batch(data_.train, tc.batch_size * M_ * D_, cfg_.data.seq_len,
                                  static_cast<uint64_t>(cfg_.seed), step);
  if (D_ > 1) {  // this pipeline's share of the global batch
    const int64_t rows = tc.batch_size * M_;
    batch.inputs = batch.inputs.narrow(0, replica_ * rows, rows);
    batch.targets = batch.targets.narrow(0, replica_ * rows, rows);
  }
  SequentialReference ref;
  const bool check = cfg_.pipeline.check_sequential && step == 0;
  exec_->set_mtp_loss_weight(model_->mtp_loss_weight(step));
  if (check) ref = sequential_reference(model_, batch.inputs, batch.targets, M_, model_->mtp_loss_weight(step));
  exec_->set_debug_exit_after(
      step == 0 && cfg_.pipeline.debug_exit_rank == me ? static_cast<int>(cfg_.pipeline.debug_exit_after) : -1);
  try {
    last_ = exec_->step(batch.inputs, batch.targets);
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    dist_->abort(e.what());
    throw;
  }
  if (check) check_parity(ref, last_);
  if (D_ > 1) {
    // Every stage's gradient and the loss: the means over the D pipelines.
    std::vector<torch::Tensor> params;
    for (const auto& p : exec_->parameters()) params.push_back(p.tensor);
    reduce_gradients(*dist_, params, peers_group_, 1.0 / D_);
    std::vector<at::Tensor> loss{torch::tensor({last_.loss / D_}, torch::kDouble).to(dist_->device())};
    dist_->all_reduce(loss, c10d::ReduceOp::SUM, peers_group_);
    last_.loss = loss[0].item<double>();
  }
  const double bubble = bubble_fraction(last_.busy, last_.seconds);
  if (!first_step_ || tc.steps == 1) {
    step_times_.push_back(last_.seconds);
    bubbles_.push_back(bubble);
    for (int r = 0; r < R; ++r)
      for (size_t i = 0; i < schedule_.actions[r].size() && i < last_.spans[r].size(); ++i) {
        const Action& a = schedule_.actions[r][i];
        const OpKind kind = a.is_compute() ? a.op : OpKind::kSend;  // SEND, RECV pooled
        run_durations_[kind].push_back(last_.spans[r][i].end - last_.spans[r][i].start);
        run_cpu_[kind].push_back(last_.cpu[r][i]);
      }
    double background = 0;
    for (double b : last_.background_cpu) background += b;
    if (messages_per_step_ > 0) message_cpu_.push_back(background / messages_per_step_);
  }
  first_step_ = false;
  train::StepResult out;
  out.loss = inject_nan ? std::nan("") : last_.loss;
  out.metrics = {{"step_s", last_.seconds}, {"bubble_fraction", bubble}, {"busy_s", last_.busy}};
  return out;
}

json PipelineObjective::summary() {
  const auto& pc = cfg_.pipeline;
  const int R = P_;  // the ranks of one pipeline
  json summary = summary_;
  const double step_s = median(step_times_);
  summary.update(json{{"schedule", pc.schedule},
                      {"ranks", dist_->world_size()},
                      {"pipeline_ranks", R},
                      {"data_parallel", D_},
                      {"stages", schedule_.stages},
                      {"microbatches", M_},
                      {"backend", dist_->backend_name()},
                      {"parameters", model_->num_parameters()},
                      {"device", dist_->device().str()},
                      {"step_s", step_s},
                      {"bubble_fraction", median(bubbles_)},
                      {"step_ms", step_s * 1e3},
                      {"tokens_per_s", tokens_per_step() / std::max(step_s, 1e-9)},
                      {"peak_activations", peak_activations(schedule_)}});
  if (step_times_.empty()) return summary;  // stopped before a measured step
  {
    // The schedule model checked on its own: the simulator fed with the median duration of each
    // kind of compute as it ran in these steps, and of posting a SEND or RECV (so machine speed,
    // sharing and drift between a separate cost measurement and the run cancel out), one core
    // per rank.
    double bw_run = -1;
    const Costs rc = costs_from(run_durations_, median, &bw_run);
    const Timeline from_run = simulate_shared_cores(schedule_, rc, R, bw_run);
    summary["run_costs_s"] = ran_costs_json(run_durations_, median, rc);
    summary["predicted_from_run_costs"] = {{"step_s", from_run.total},
                                           {"bubble_fraction", bubble_fraction(from_run.busy, from_run.total)}};
    summary["predicted_from_run_step_ms"] = from_run.total * 1e3;
    summary["step_error_vs_run_cost_prediction"] = (step_s - from_run.total) / from_run.total;
    summary["report_columns"] = {"step_ms", "predicted_from_run_step_ms", "step_error_vs_run_cost_prediction",
                                 "bubble_fraction"};
  }
  if (!dist_->device().is_cuda()) {
    // The same in-run check from CPU time instead of wall time: each compute's own work (its
    // main-thread CPU time, without the waits for a core when ranks share cores), each posting's,
    // and the transport threads' CPU per message, simulated with the ranks sharing this machine's
    // cores (simulate_shared_cores). This is the check that holds up with more ranks than cores.
    // Means, not medians: with the cores shared, the step is bound by the total work.
    double bw_cpu = -1;
    const Costs cc = costs_from(run_cpu_, mean, &bw_cpu);
    const double per_message = message_cpu_.empty() ? 0.0 : mean(message_cpu_);
    const double cores = usable_cores();
    const Timeline from_cpu = simulate_shared_cores(schedule_, cc, cores, bw_cpu, per_message);
    json measured = ran_costs_json(run_cpu_, mean, cc);
    measured["message"] = per_message;
    summary["run_cpu_costs_s"] = measured;
    summary["cores"] = cores;
    summary["predicted_from_run_cpu"] = {{"step_s", from_cpu.total},
                                         {"bubble_fraction", bubble_fraction(from_cpu.busy, from_cpu.total)}};
    summary["predicted_from_run_cpu_step_ms"] = from_cpu.total * 1e3;
    summary["step_error_vs_run_cpu_prediction"] = (step_s - from_cpu.total) / from_cpu.total;
    summary["predicted_from_run_cpu_bubble_fraction"] = bubble_fraction(from_cpu.busy, from_cpu.total);
    for (const char* k : {"predicted_from_run_cpu_step_ms", "step_error_vs_run_cpu_prediction",
                          "predicted_from_run_cpu_bubble_fraction"})
      summary["report_columns"].push_back(k);
  }
  if (pc.measure_costs) {
    const double cores = usable_cores();
    // The fused BW is measured on its own: it is cheaper than B + W (no split overheads).
    double bw = 0;
    for (const auto& s : stage_costs_) bw += s.BW / static_cast<double>(stage_costs_.size());
    const Timeline dedicated = simulate_shared_cores(schedule_, costs_, R, bw);
    const Timeline shared = simulate_shared_cores(schedule_, costs_, cores, bw);
    json per_stage_fixed = json::array();
    for (const auto& s : stage_costs_) {
      json j = costs_json(s.costs);
      j["BW"] = s.BW;
      j["stage"] = s.stage;
      per_stage_fixed.push_back(j);
    }
    summary["costs_s"] = costs_json(costs_);
    summary["costs_s"]["BW"] = bw;
    summary["stage_costs_s"] = per_stage_fixed;
    summary["cores"] = cores;
    summary["predicted"] = {
        {"core_per_rank",
         {{"step_s", dedicated.total}, {"bubble_fraction", bubble_fraction(dedicated.busy, dedicated.total)}}},
        {"shared_cores", {{"step_s", shared.total}, {"bubble_fraction", bubble_fraction(shared.busy, shared.total)}}}};
    summary["step_error_vs_shared_prediction"] = (step_s - shared.total) / shared.total;
    // Flat copies for the report table (`tinyseek report` shows top-level numbers).
    summary["predicted_step_ms"] = shared.total * 1e3;
    summary["predicted_bubble_fraction"] = bubble_fraction(shared.busy, shared.total);
    for (const char* k : {"predicted_step_ms", "step_error_vs_shared_prediction", "predicted_bubble_fraction"})
      summary["report_columns"].push_back(k);
    if (lead()) util::atomic_write(run_dir_ / "timeline_predicted.svg", render_svg(schedule_, shared));
  }
  if (lead()) {
    const Timeline measured = measured_timeline(schedule_, last_, 1e3);  // milliseconds
    util::atomic_write(run_dir_ / "timeline_measured.svg", render_svg(schedule_, measured));
    util::atomic_write(run_dir_ / "timeline_measured.json", to_json(schedule_, measured));
  }
  return summary;
}

}  // namespace

run::RunOutcome train_pipeline(const config::Config& cfg, const std::string& variant, const fs::path& run_dir,
                               bool resume) {
  PipelineObjective objective(cfg, variant, run_dir);
  return train::train_loop(objective, cfg, variant, run::RunFolder(run_dir), resume);
}

}  // namespace ts::parallel
