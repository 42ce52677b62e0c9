#include "experiments/moe_ep.h"

#include <fmt/format.h>

#include <chrono>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "csrc/nn/moe.h"
#include "csrc/parallel/expert_parallel.h"
#include "csrc/parallel/pipeline_train.h"
#include "csrc/run/kinds.h"
#include "csrc/run/run_folder.h"
#include "csrc/train/checkpoint.h"
#include "csrc/util/tensor_compare.h"

namespace ts::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

void check_moe_ep_config(const config::Config& cfg, int world_size) {
  if (cfg.model.ffn != "moe")
    throw config::InvalidKeys({"model.ffn"}, "kind moe_ep needs 'moe', got '" + cfg.model.ffn + "'");
  const int64_t N = cfg.parallel.expert == 0 ? world_size : cfg.parallel.expert;
  if (world_size % N)
    throw config::InvalidKeys({"parallel.expert"},
                              fmt::format("{} does not divide the {} ranks of this job", N, world_size));
  if (cfg.model.moe.n_routed_experts % N)
    throw config::InvalidKeys({"model.moe.n_routed_experts", "parallel.expert"},
                              fmt::format("expert parallelism over {} ranks needs a multiple of {}, got {}", N, N,
                                          cfg.model.moe.n_routed_experts));
}

run::RunOutcome run_moe_ep(const config::Config& cfg, const std::string& variant, const fs::path& run_dir,
                           bool resume) {
  if (cfg.model.ffn != "moe")
    throw config::ConfigError("model.ffn: kind moe_ep needs 'moe', got '" + cfg.model.ffn + "'");
  if (cfg.train.threads > 0) torch::set_num_threads(static_cast<int>(cfg.train.threads));
  auto dist = parallel::process_dist(cfg);
  const int me = dist->rank(), W = dist->world_size();
  const int N = cfg.parallel.expert == 0 ? W : static_cast<int>(cfg.parallel.expert);
  // Expert-parallel group: N consecutive ranks sharing the experts. Replica group: the ranks
  // holding the same expert shard in the W / N data-parallel copies.
  const auto& group = dist->group(parallel::consecutive_ranks(me, N));
  const auto& replicas = dist->group(parallel::strided_ranks(me, N, W));
  const auto dev = dist->device();
  const int64_t B = cfg.train.batch_size, S = cfg.data.seq_len, C = cfg.model.d_model;
  const int64_t E = cfg.model.moe.n_routed_experts, local = E / N;

  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  nn::MoE full(cfg);
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  nn::MoE ep(cfg);
  full->to(dev);
  ep->to(dev);
  parallel::shard_experts(*ep, *dist, group);

  torch::manual_seed(static_cast<uint64_t>(cfg.seed) + 1);
  auto x = torch::randn({W * B, S, C}).to(dev);
  auto g = torch::randn({W * B, S, C}).to(dev);
  auto xf = x.clone().requires_grad_();
  auto yf = full(xf);
  (yf * g).sum().backward();
  yf = yf.detach();

  auto xl = x.narrow(0, me * B, B).clone().requires_grad_();
  auto yl = ep(xl);
  (yl * g.narrow(0, me * B, B)).sum().backward();

  std::map<std::string, double> diffs;
  diffs["output"] = util::rel_diff(yl.detach(), yf.narrow(0, me * B, B));
  diffs["grad_input"] = util::rel_diff(xl.grad(), xf.grad().narrow(0, me * B, B));
  auto full_params = full->named_parameters();
  for (auto& p : ep->named_parameters()) {
    auto grad = p.value().grad();
    auto ref = full_params[p.key()].grad();
    if (p.key().starts_with("w13.") || p.key().starts_with("w2.")) {
      // This rank's experts: its EP group's tokens are here; the replicas add theirs.
      ref = ref.narrow(0, group.rank * local, local);
      std::vector<at::Tensor> t{grad};
      dist->all_reduce(t, c10d::ReduceOp::SUM, &replicas);
    } else {
      std::vector<at::Tensor> t{grad};  // replicated: each rank holds its tokens' share
      dist->all_reduce(t);
    }
    diffs["grad_" + p.key()] = util::rel_diff(grad, ref);
  }
  double worst = 0;
  for (const auto& [k, v] : diffs) worst = std::max(worst, v);
  std::vector<at::Tensor> w{torch::tensor({worst}, torch::kDouble).to(dev)};
  dist->all_reduce(w, c10d::ReduceOp::MAX);
  const double worst_all = w[0].item<double>();
  const double tol = cfg.pipeline.check_tolerance;
  std::cout << fmt::format(
                   "{}/{}: expert-parallel parity on rank {} of {} ({} expert-parallel group(s) of {} "
                   "ranks, {} experts per rank): max relative difference {:.3g} (all ranks {:.3g}, "
                   "tolerance {:.3g})\n",
                   cfg.name, variant, me, W, W / N, N, local, worst, worst_all, tol)
            << std::flush;

  // Timed sharded forward + backward (dispatch, experts, combine), after one warm-up pass.
  // Each iteration starts with the ranks agreeing on Ctrl-C (it synchronizes them as a barrier
  // would): one rank stopping alone would leave the others waiting in the next collective.
  double ms = 0;
  for (int64_t i = 0; i <= cfg.train.steps; ++i) {
    if (dist->any(run::interrupt_flag().load())) {
      std::cerr << fmt::format("{}/{}: interrupted during the timed passes; nothing written\n", cfg.name, variant);
      run::RunOutcome stopped;
      stopped.status = run::RunStatus::kInterrupted;
      stopped.summary = {{"name", cfg.name}, {"variant", variant}, {"status", "interrupted"}};
      return stopped;
    }
    const auto t0 = std::chrono::steady_clock::now();
    (ep(xl) * g.narrow(0, me * B, B)).sum().backward();
    dist->barrier();
    if (i > 0) ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  ms /= static_cast<double>(std::max<int64_t>(1, cfg.train.steps));

  run::RunOutcome out;
  out.summary = {{"name", cfg.name},
                 {"variant", variant},
                 {"status", worst_all <= tol ? "completed" : "parity_failed"},
                 {"steps", 0},
                 {"ranks", W},
                 {"expert_parallel", N},
                 {"experts_per_rank", local},
                 {"tokens_per_rank", B * S},
                 {"parity", {{"max_rel_diff", worst_all}, {"tolerance", tol}, {"rank0", diffs}}},
                 {"parity_max_rel_diff", worst_all},
                 {"ep_step_ms", ms},
                 {"report_columns", {"parity_max_rel_diff", "ep_step_ms"}},
                 {"device", dev.str()}};
  if (me == 0) {
    const run::RunFolder folder(run_dir);
    folder.write_config(cfg);
    folder.write_summary(out.summary);
  }
  if (worst_all > tol)
    throw std::runtime_error(
        fmt::format("{}/{}: expert-parallel result differs from the single-process layer by {:.3g} "
                    "(> pipeline.check_tolerance {:.3g})",
                    cfg.name, variant, worst_all, tol));
  return out;
}

}  // namespace ts::experiments
