#include "csrc/parallel/pipeline_train.h"

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
#include "csrc/train/checkpoint.h"
#include "csrc/train/data.h"
#include "csrc/util/tensor_compare.h"

namespace ts::parallel {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::shared_ptr<Dist>& dist_slot() {
  static std::shared_ptr<Dist> d;
  return d;
}

torch::Device pick_device(const config::TrainConfig& t) {
  if (t.device == "cuda" && !torch::cuda::is_available())
    throw config::ConfigError("train.device: 'cuda' was requested but no CUDA device is available");
  const bool cuda = t.device == "cuda" || (t.device == "auto" && torch::cuda::is_available());
  return cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

// One process's sequential reference for a batch: loss and every gradient of the whole model.
struct Reference {
  double loss = 0;
  std::map<std::string, at::Tensor> grads;
};

Reference sequential_reference(nn::Transformer& model, const at::Tensor& inputs, const at::Tensor& targets, int M,
                               const torch::Device& dev) {
  model->zero_grad(/*set_to_none=*/true);
  Reference ref;
  auto xs = inputs.to(dev).chunk(M, 0), ys = targets.to(dev).chunk(M, 0);
  for (int m = 0; m < M; ++m) {
    at::Tensor loss = nn::TransformerImpl::loss(model->forward(xs[m]), ys[m]);
    ref.loss += loss.item<double>() / M;
    loss.backward(torch::full({}, 1.0 / M, loss.options()));
  }
  for (const auto& p : model->named_parameters())
    if (p.value().grad().defined()) ref.grads[p.key()] = p.value().grad().detach().clone();
  model->zero_grad(/*set_to_none=*/true);
  return ref;
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
  o.device = pick_device(cfg.train).is_cuda() ? "cuda" : "cpu";
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.timeout_s * 1000));
  o.heartbeat = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.heartbeat_s * 1000));
  o.dead_after = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.dead_after_s * 1000));
  d = Dist::init_from_env(o);
  return d;
}

void release_process_dist() { dist_slot().reset(); }

train::RunOutcome train_pipeline(const config::Config& cfg, const std::string& variant, const fs::path& run_dir,
                                 bool resume) {
  const auto& tc = cfg.train;
  const auto& pc = cfg.pipeline;
  if (tc.threads > 0) torch::set_num_threads(static_cast<int>(tc.threads));
  std::shared_ptr<Dist> dist = process_dist(cfg);
  const int me = dist->rank(), R = dist->world_size();
  const bool lead = me == 0;
  const torch::Device dev = dist->device();
  const int M = static_cast<int>(pc.microbatches);

  Schedule schedule;
  try {
    schedule = make_schedule(parse_schedule_kind(pc.schedule), R, M);
    split_stages(cfg.model.n_layers, schedule.stages);
  } catch (const std::invalid_argument& e) {
    throw config::ConfigError(std::string("pipeline (WORLD_SIZE=") + std::to_string(R) + "): " + e.what());
  }
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  nn::Transformer model(cfg);
  model->to(dev);
  const train::TokenData data = train::load_data(cfg.data);
  if (data.max_token >= cfg.model.vocab_size)
    throw config::ConfigError(
        fmt::format("model.vocab_size: {} is too small for the data's token {}", cfg.model.vocab_size, data.max_token));
  if (lead) {
    fs::create_directories(run_dir);
    train::atomic_write(run_dir / "config.resolved.yaml", config::to_yaml(cfg));
  }
  const std::string label = cfg.name + "/" + variant;
  if (lead)
    std::cout << fmt::format("{}: {} on {} ranks ({} backend), {} stages, {} micro-batches of {}x{} tokens, {}{}\n",
                             label, pc.schedule, R, dist->backend_name(), schedule.stages, M, tc.batch_size,
                             cfg.data.seq_len, dev.str(), resume ? " (pipeline runs keep no checkpoints: rerun)" : "")
              << std::flush;

  ExecutorOptions eo;
  eo.p2p = pc.p2p;
  PipelineExecutor exec(*dist, schedule, model, eo);
  const std::vector<StageRange> ranges = exec.stages();

  // Costs first, on rank 0 alone: the others wait in the barrier, so the timing owns a core.
  json summary;
  std::vector<StageCosts> stage_costs;
  Costs costs;
  if (pc.measure_costs) {
    auto cost_t = torch::zeros({static_cast<int64_t>(ranges.size()), 5}, torch::kDouble);
    if (lead) {
      auto b = train::train_batch(data.train, tc.batch_size, cfg.data.seq_len, static_cast<uint64_t>(cfg.seed), 0);
      stage_costs =
          measure_stage_costs(model, ranges, b.inputs.to(dev), b.targets.to(dev), static_cast<int>(pc.measure_repeats));
      for (const auto& s : stage_costs)
        for (int k = 0; k < 5; ++k)
          cost_t[s.stage][k] = std::vector<double>{s.costs.F, s.costs.B, s.costs.W, s.costs.FB, s.BW}[k];
    }
    std::vector<at::Tensor> v{cost_t.to(dev)};
    dist->broadcast(v, 0);
    cost_t = v[0].cpu();
    stage_costs.clear();
    for (int s = 0; s < cost_t.size(0); ++s) {
      StageCosts c;
      c.stage = s;
      c.costs = {cost_t[s][0].item<double>(), cost_t[s][1].item<double>(), cost_t[s][2].item<double>(),
                 cost_t[s][3].item<double>(), 0};
      c.BW = cost_t[s][4].item<double>();
      stage_costs.push_back(c);
    }
    costs = mean_costs(stage_costs);
  }

  std::vector<at::Tensor> decay, no_decay;
  for (const auto& p : exec.parameters()) (p.tensor.dim() >= 2 ? decay : no_decay).push_back(p.tensor);
  auto opts = torch::optim::AdamWOptions(tc.lr).betas({tc.beta1, tc.beta2}).eps(tc.adam_eps);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(opts).weight_decay(tc.weight_decay)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(0)));
  torch::optim::AdamW opt(std::move(groups), opts);

  std::unique_ptr<std::ofstream> metrics;
  if (lead) metrics = std::make_unique<std::ofstream>(run_dir / "metrics.jsonl", std::ios::trunc);
  const int64_t tokens_per_step = tc.batch_size * M * cfg.data.seq_len;
  std::vector<double> step_times, bubbles;
  // Durations in the measured steps, all ranks: computes by kind (F, B, W, BW, FB); the
  // postings of SEND and RECV pooled under kSend.
  Samples run_durations;
  Samples run_cpu;                  // the same actions' main-thread CPU time
  std::vector<double> message_cpu;  // per step: transport threads' CPU per message
  int messages_per_step = 0;
  for (const auto& list : schedule.actions)
    for (const Action& a : list) messages_per_step += a.op == OpKind::kSend;
  StepResult last;
  double last_loss = std::nan("");
  for (int64_t step = 0; step < tc.steps; ++step) {
    const double lr = train::lr_at(tc, step);
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    auto batch =
        train::train_batch(data.train, tc.batch_size * M, cfg.data.seq_len, static_cast<uint64_t>(cfg.seed), step);
    Reference ref;
    const bool check = pc.check_sequential && step == 0;
    if (check) ref = sequential_reference(model, batch.inputs, batch.targets, M, dev);
    exec.set_debug_exit_after(step == 0 && pc.debug_exit_rank == me ? static_cast<int>(pc.debug_exit_after) : -1);
    try {
      last = exec.step(batch.inputs, batch.targets);
    } catch (const DistError&) {
      throw;
    } catch (const std::exception& e) {
      dist->abort(e.what());
      throw;
    }
    last_loss = last.loss;
    if (check) {
      // Per tensor ||g_pipe - g_seq|| / ||g_seq||, worst over this rank's stages, then over ranks.
      double worst = 0;
      std::string worst_name;
      for (const auto& p : exec.parameters()) {
        const double d = util::rel_diff(p.tensor.grad(), ref.grads.at(p.name));
        if (d > worst || worst_name.empty()) worst = d, worst_name = p.name;
      }
      const double loss_rel = std::abs(last.loss - ref.loss) / std::max(std::abs(ref.loss), 1e-30);
      std::cout << fmt::format(
                       "{}: parity on rank {}: {} gradient tensors, max rel diff {:.3e} ({}), loss {:.9f} vs "
                       "sequential {:.9f} (rel {:.3e})\n",
                       label, me, exec.parameters().size(), worst, worst_name, last.loss, ref.loss, loss_rel)
                << std::flush;
      std::vector<at::Tensor> v{torch::tensor({worst, loss_rel}, torch::kDouble).to(dev)};
      dist->all_reduce(v, c10d::ReduceOp::MAX);
      const double g_worst = v[0][0].item<double>(), l_worst = v[0][1].item<double>();
      summary["parity"] = {{"max_grad_rel_diff", g_worst},
                           {"loss_rel_diff", l_worst},
                           {"tolerance", pc.check_tolerance},
                           {"sequential_loss", ref.loss},
                           {"pipeline_loss", last.loss}};
      if (!(g_worst <= pc.check_tolerance) || !(l_worst <= pc.check_tolerance))
        throw std::runtime_error(
            fmt::format("pipeline {}: gradients or loss differ from sequential training: max "
                        "grad rel diff {:.3e}, loss rel diff {:.3e} > tolerance {:.1e}",
                        pc.schedule, g_worst, l_worst, pc.check_tolerance));
    }
    // Global gradient norm: every stage counted once (DualPipe's mirrored copies are equal).
    double sq = 0;
    for (const auto& p : exec.parameters())
      if (p.owned && p.tensor.grad().defined()) sq += p.tensor.grad().to(torch::kDouble).pow(2).sum().item<double>();
    std::vector<at::Tensor> v{torch::tensor({sq}, torch::kDouble).to(dev)};
    dist->all_reduce(v);
    const double gnorm = std::sqrt(v[0][0].item<double>());
    if (tc.grad_clip > 0 && gnorm > tc.grad_clip)
      for (const auto& p : exec.parameters())
        if (p.tensor.grad().defined()) p.tensor.grad().mul_(tc.grad_clip / (gnorm + 1e-6));
    opt.step();
    const double bubble = bubble_fraction(last.busy, last.seconds);
    if (step > 0 || tc.steps == 1) {
      step_times.push_back(last.seconds);
      bubbles.push_back(bubble);
      for (int r = 0; r < R; ++r)
        for (size_t i = 0; i < schedule.actions[r].size() && i < last.spans[r].size(); ++i) {
          const OpKind kind = schedule.actions[r][i].is_compute() ? schedule.actions[r][i].op : OpKind::kSend;
          run_durations[kind].push_back(last.spans[r][i].end - last.spans[r][i].start);  // SEND, RECV pooled
          run_cpu[kind].push_back(last.cpu[r][i]);
        }
      double background = 0;
      for (double b : last.background_cpu) background += b;
      if (messages_per_step > 0) message_cpu.push_back(background / messages_per_step);
    }
    if (lead) {
      *metrics << json{{"step", step},
                       {"loss", last.loss},
                       {"lr", lr},
                       {"grad_norm", gnorm},
                       {"step_s", last.seconds},
                       {"bubble_fraction", bubble},
                       {"busy_s", last.busy},
                       {"tokens_per_s", tokens_per_step / std::max(last.seconds, 1e-9)}}
                      .dump()
               << "\n"
               << std::flush;
      if (step % tc.log_every == 0 || step + 1 == tc.steps)
        std::cout << fmt::format("{}: step {} loss {:.4f} step {:.1f} ms bubble {:.1f}%\n", label, step, last.loss,
                                 last.seconds * 1e3, bubble * 100)
                  << std::flush;
    }
  }

  train::RunOutcome out;
  const double step_s = median(step_times);
  summary.update(json{{"status", "completed"},
                      {"steps", tc.steps},
                      {"variant", variant},
                      {"schedule", pc.schedule},
                      {"ranks", R},
                      {"stages", schedule.stages},
                      {"microbatches", M},
                      {"backend", dist->backend_name()},
                      {"final_train_loss", last_loss},
                      {"parameters", model->num_parameters()},
                      {"step_s", step_s},
                      {"bubble_fraction", median(bubbles)},
                      {"step_ms", step_s * 1e3},
                      {"tokens_per_s", tokens_per_step / std::max(step_s, 1e-9)},
                      {"peak_activations", peak_activations(schedule)}});
  {
    // The schedule model checked on its own: the simulator fed with the median duration of each
    // kind of compute as it ran in these steps, and of posting a SEND or RECV (so machine speed,
    // sharing and drift between a separate cost measurement and the run cancel out), one core
    // per rank.
    double bw_run = -1;
    const Costs rc = costs_from(run_durations, median, &bw_run);
    const Timeline from_run = simulate_shared_cores(schedule, rc, R, bw_run);
    summary["run_costs_s"] = ran_costs_json(run_durations, median, rc);
    summary["predicted_from_run_costs"] = {{"step_s", from_run.total},
                                           {"bubble_fraction", bubble_fraction(from_run.busy, from_run.total)}};
    summary["predicted_from_run_step_ms"] = from_run.total * 1e3;
    summary["step_error_vs_run_cost_prediction"] = (step_s - from_run.total) / from_run.total;
    summary["report_columns"] = {"step_ms", "predicted_from_run_step_ms", "step_error_vs_run_cost_prediction",
                                 "bubble_fraction"};
  }
  if (!dev.is_cuda()) {
    // The same in-run check from CPU time instead of wall time: each compute's own work (its
    // main-thread CPU time, without the waits for a core when ranks share cores), each posting's,
    // and the transport threads' CPU per message, simulated with the ranks sharing this machine's
    // cores (simulate_shared_cores). This is the check that holds up with more ranks than cores.
    // Means, not medians: with the cores shared, the step is bound by the total work.
    double bw_cpu = -1;
    const Costs cc = costs_from(run_cpu, mean, &bw_cpu);
    const double per_message = message_cpu.empty() ? 0.0 : mean(message_cpu);
    const double cores = usable_cores();
    const Timeline from_cpu = simulate_shared_cores(schedule, cc, cores, bw_cpu, per_message);
    json measured = ran_costs_json(run_cpu, mean, cc);
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
    for (const auto& s : stage_costs) bw += s.BW / static_cast<double>(stage_costs.size());
    const Timeline dedicated = simulate_shared_cores(schedule, costs, R, bw);
    const Timeline shared = simulate_shared_cores(schedule, costs, cores, bw);
    json per_stage_fixed = json::array();
    for (const auto& s : stage_costs) {
      json j = costs_json(s.costs);
      j["BW"] = s.BW;
      j["stage"] = s.stage;
      per_stage_fixed.push_back(j);
    }
    summary["costs_s"] = costs_json(costs);
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
    if (lead) {
      train::atomic_write(run_dir / "timeline_predicted.svg", render_svg(schedule, shared));
    }
  }
  if (lead) {
    const Timeline measured = measured_timeline(schedule, last, 1e3);  // milliseconds
    train::atomic_write(run_dir / "timeline_measured.svg", render_svg(schedule, measured));
    train::atomic_write(run_dir / "timeline_measured.json", to_json(schedule, measured));
    train::atomic_write(run_dir / "summary.json", summary.dump(2) + "\n");
  }
  out.summary = summary;
  return out;
}

}  // namespace ts::parallel
