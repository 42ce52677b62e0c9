#include "csrc/parallel/executor.h"

#include "csrc/parallel/data_parallel.h"
#include "csrc/parallel/expert_parallel.h"

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/variable.h>

#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <optional>
#include <stdexcept>
#include <unordered_map>

#include "csrc/parallel/schedule_internal.h"
#include "csrc/parallel/split_backward.h"

namespace ts::parallel {

namespace {
using Clock = std::chrono::steady_clock;

// CPU seconds used so far by the calling thread, and by the whole process (all its threads).
double cpu_seconds(clockid_t which) {
  timespec ts{};
  clock_gettime(which, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}
double thread_cpu_s() { return cpu_seconds(CLOCK_THREAD_CPUTIME_ID); }
double process_cpu_s() { return cpu_seconds(CLOCK_PROCESS_CPUTIME_ID); }
}  // namespace

std::vector<StageRange> split_stages(int64_t n_layers, int stages) {
  if (stages < 1 || stages > n_layers)
    throw std::invalid_argument(
        fmt::format("pipeline: {} stages need 1 <= stages <= model.n_layers ({})", stages, n_layers));
  std::vector<StageRange> out(stages);
  int64_t at = 0;
  for (int s = 0; s < stages; ++s) {
    const int64_t n = n_layers / stages + (s < n_layers % stages ? 1 : 0);
    out[s] = {s, at, at + n, s == 0, s == stages - 1};
    at += n;
  }
  return out;
}

int stage_of_parameter(const std::string& name, const std::vector<StageRange>& stages) {
  if (name.starts_with("embed.")) return 0;
  if (name.starts_with("norm.") || name.starts_with("head.") || name.starts_with("mtp."))
    return static_cast<int>(stages.size()) - 1;
  if (name.starts_with("blocks.")) {
    const int64_t block = std::stoll(name.substr(7, name.find('.', 7) - 7));
    for (const auto& r : stages)
      if (block >= r.begin && block < r.end) return r.stage;
  }
  throw std::invalid_argument("pipeline: parameter '" + name +
                              "' belongs to no stage (embed, blocks.<i>, norm, head, mtp)");
}

// Everything one step keeps per unit and per message.
struct StepContext {
  struct UnitState {
    at::Tensor embed_out;  // stage 0: the embedding's output (its graph leads to the embedding)
    at::Tensor input;      // leaf the stage's graph starts from
    at::Tensor output;     // block output, or the micro-batch loss on the last stage
    at::Tensor d_input;    // gradient of `input`, after B/BW
    SplitBackward split;   // between B and W
  };
  std::vector<at::Tensor> inputs, targets;  // [M] micro-batches, [b, T]
  std::unordered_map<int, UnitState> units;
  struct Pending {
    c10::intrusive_ptr<c10d::Work> work;
    at::Tensor tensor;
    std::string what;
  };
  std::unordered_map<int, Pending> recvs;  // by message id
  std::vector<Pending> sends;
  std::vector<Dist::P2POp> batch;  // batched mode: p2p ops since the last compute
  std::vector<std::string> batch_what;
  double loss_sum = 0;
  std::vector<at::Tensor> losses;  // last-stage losses, read after the step (no sync per forward)
  Clock::time_point t0;
};

PipelineExecutor::PipelineExecutor(Dist& dist, Schedule schedule, nn::Transformer model, ExecutorOptions options,
                                   std::vector<int> pipeline_ranks)
    : dist_(dist),
      schedule_(std::move(schedule)),
      ranks_(std::move(pipeline_ranks)),
      model_(std::move(model)),
      options_(std::move(options)) {
  if (ranks_.empty())
    for (int r = 0; r < dist_.world_size(); ++r) ranks_.push_back(r);
  if (schedule_.ranks != static_cast<int>(ranks_.size()))
    throw std::invalid_argument(fmt::format("pipeline: schedule {} has {} ranks but the pipeline has {}",
                                            schedule_kind_name(schedule_.kind), schedule_.ranks, ranks_.size()));
  const auto it = std::find(ranks_.begin(), ranks_.end(), dist_.rank());
  if (it == ranks_.end())
    throw std::invalid_argument(fmt::format("pipeline: rank {} is not one of the pipeline's ranks", dist_.rank()));
  me_ = static_cast<int>(it - ranks_.begin());
  if (static_cast<int>(ranks_.size()) != dist_.world_size()) pipe_ = &dist_.group(ranks_);
  const auto report = validate(schedule_);
  if (!report.ok) throw std::invalid_argument("pipeline: invalid schedule:\n" + report.summary());
  if (options_.p2p == "auto") {
    batched_ = dist_.backend_name() == "nccl";
  } else if (options_.p2p == "per_op" || options_.p2p == "batched") {
    batched_ = options_.p2p == "batched";
  } else {
    throw std::invalid_argument("pipeline.p2p: expected auto, per_op or batched, got '" + options_.p2p + "'");
  }
  ranges_ = split_stages(model_->n_layers(), schedule_.stages);
  for (const Action& a : schedule_.actions[me_]) {
    if (!a.is_compute()) continue;
    for (int s : {a.unit.stage, a.op == OpKind::kFB ? a.bwd.stage : a.unit.stage})
      if (std::find(held_.begin(), held_.end(), s) == held_.end()) held_.push_back(s);
  }
  std::sort(held_.begin(), held_.end());
  for (int s : held_) {
    const int owner = schedule_.rank_of(schedule_.unit(0, s));
    for (const auto& p : model_->named_parameters())
      if (stage_of_parameter(p.key(), ranges_) == s) params_.push_back({p.key(), p.value(), s, owner == me_});
  }
  // The MTP modules on the last stage embed tokens with the first stage's embedding. Where the
  // two stages live on different ranks (1F1B, ZB1P), both ranks train a copy of the embedding and
  // sum its gradient after each step; DualPipe and DualPipeV hold both stages on the same ranks.
  if (model_->mtp_depth() > 0) {
    const int last = schedule_.stages - 1;
    const bool has_first = std::find(held_.begin(), held_.end(), 0) != held_.end();
    const bool has_last = std::find(held_.begin(), held_.end(), last) != held_.end();
    const int first_rank = schedule_.rank_of(schedule_.unit(0, 0));
    const int last_rank = schedule_.rank_of(schedule_.unit(0, last));
    if (has_first != has_last && first_rank != last_rank && schedule_.kind != ScheduleKind::kDualPipe) {
      embed_pair_ = {std::min(first_rank, last_rank), std::max(first_rank, last_rank)};
      if (has_last)
        for (const auto& p : model_->named_parameters())
          if (p.key().starts_with("embed.")) params_.push_back({p.key(), p.value(), last, /*owned=*/false});
    }
  }
}

namespace {

// On CUDA every forward of direction d is queued on its own stream d (forked from the current
// stream, so it sees every input already there). Autograd later replays a node's backward on
// the stream its forward ran on, so in DualPipe's F&B pairs (a forward of one direction, a full
// backward of the other) the two halves land on different streams and overlap on the GPU. The
// join (the current stream waits for stream d) comes after the backward has been queued. On
// CPU, or with no forward streams, everything stays on the calling thread's one stream.
class ForwardStream {
 public:
  ForwardStream(std::vector<c10::Stream>& streams, const torch::Device& device, int dir) {
    if (!device.is_cuda()) return;
    c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
    while (streams.size() < 2) streams.push_back(impl.getStreamFromGlobalPool(device, /*isHighPriority=*/false));
    main_.emplace(impl.getStream(device));
    side_.emplace(streams.at(static_cast<size_t>(dir)));
    c10::Event fork(c10::DeviceType::CUDA);
    fork.record(*main_);
    fork.block(*side_);
    guard_.emplace(*side_);
  }
  // Back to the main stream (the forward's work stays queued on its own).
  void leave() { guard_.reset(); }
  // The main stream waits for everything queued on the forward stream.
  ~ForwardStream() {
    guard_.reset();
    if (!side_) return;
    c10::Event join(c10::DeviceType::CUDA);
    join.record(*side_);
    join.block(*main_);
  }
  ForwardStream(const ForwardStream&) = delete;
  ForwardStream& operator=(const ForwardStream&) = delete;

 private:
  std::optional<c10::Stream> main_, side_;
  std::optional<c10::StreamGuard> guard_;
};

}  // namespace

void PipelineExecutor::forward(const Unit& u, StepContext& ctx) {
  auto& st = ctx.units[detail::unit_id(schedule_, u)];
  const StageRange& range = ranges_[u.stage];
  if (range.first) {
    st.embed_out = model_->embed_tokens(ctx.inputs[u.mb]);
    st.input = st.embed_out.detach().requires_grad_(true);
  } else {
    const Unit prev = schedule_.unit(u.mb, u.stage - 1);
    if (schedule_.rank_of(prev) == me_) {
      st.input = ctx.units.at(detail::unit_id(schedule_, prev)).output.detach().requires_grad_(true);
    } else {
      auto it = ctx.recvs.find(detail::message_id(schedule_, Payload::kActivation, prev));
      if (it == ctx.recvs.end())
        throw std::logic_error("pipeline: no RECV posted for " + describe(Action{OpKind::kF, u}));
      if (it->second.work) dist_.wait(it->second.work, it->second.what);
      st.input = it->second.tensor.requires_grad_(true);
      ctx.recvs.erase(it);
    }
  }
  at::Tensor h = model_->run_blocks(st.input, range.begin, range.end);
  h = nn::attach_aux_loss(h, model_->aux_loss(range.begin, range.end), 1.0 / schedule_.microbatches);
  if (range.last) {
    nn::LmLoss parts;
    st.output = model_->head_objective(h, ctx.inputs[u.mb], ctx.targets[u.mb], mtp_loss_weight_, &parts);
    ctx.losses.push_back(parts.main.detach());
  } else {
    st.output = h;
  }
}

void PipelineExecutor::wait_inputs(const Action& a, StepContext& ctx) {
  std::vector<detail::Need> needs;
  detail::needs(schedule_, me_, a, &needs);
  for (const auto& n : needs) {
    if (n.from_rank == me_) continue;
    auto it = ctx.recvs.find(detail::message_id(schedule_, detail::payload_of(n.what), n.unit));
    if (it == ctx.recvs.end()) throw std::logic_error("pipeline: no RECV posted before " + describe(a));
    if (it->second.work) dist_.wait(it->second.work, it->second.what);
    it->second.work.reset();
  }
}

at::Tensor PipelineExecutor::backward_root_grad(const Unit& u, StepContext& ctx) {
  auto& st = ctx.units.at(detail::unit_id(schedule_, u));
  if (ranges_[u.stage].last) return torch::full({}, 1.0 / schedule_.microbatches, st.output.options());
  const Unit next = schedule_.unit(u.mb, u.stage + 1);
  if (schedule_.rank_of(next) == me_) return ctx.units.at(detail::unit_id(schedule_, next)).d_input;
  auto it = ctx.recvs.find(detail::message_id(schedule_, Payload::kGradient, next));
  if (it == ctx.recvs.end())
    throw std::logic_error("pipeline: no gradient RECV posted for " + describe(Action{OpKind::kB, u}));
  if (it->second.work) dist_.wait(it->second.work, it->second.what);
  at::Tensor g = it->second.tensor;
  ctx.recvs.erase(it);
  return g;
}

void PipelineExecutor::backward(const Unit& u, bool defer_weight, StepContext& ctx) {
  auto& st = ctx.units.at(detail::unit_id(schedule_, u));
  const at::Tensor grad = backward_root_grad(u, ctx);
  if (defer_weight) {
    st.d_input = st.split.input_backward(st.output, grad, st.input);
    return;
  }
  st.d_input = full_backward(st.output, grad, st.input);
  weight(u, ctx);
}

void PipelineExecutor::weight(const Unit& u, StepContext& ctx) {
  auto& st = ctx.units.at(detail::unit_id(schedule_, u));
  if (st.split.pending()) st.split.weight_backward();
  if (ranges_[u.stage].first) {
    // The embedding's weight gradient: its graph ends at the stage input's gradient.
    torch::autograd::Engine::get_default_engine().execute({torch::autograd::impl::gradient_edge(st.embed_out)},
                                                          {st.d_input}, false, false, true);
  }
  // The unit's activations are free now; d_input stays for a SEND or a local consumer.
  st.embed_out = at::Tensor();
  st.input = at::Tensor();
  st.output = at::Tensor();
}

StepResult PipelineExecutor::step(const at::Tensor& inputs, const at::Tensor& targets) {
  const int M = schedule_.microbatches, me = me_;
  TORCH_CHECK(inputs.size(0) % M == 0, "pipeline: batch of ", inputs.size(0), " rows does not split into ", M,
              " micro-batches");
  StepContext ctx;
  ctx.inputs = inputs.to(dist_.device()).chunk(M, 0);
  ctx.targets = targets.to(dist_.device()).chunk(M, 0);
  const int64_t b = ctx.inputs[0].size(0), T = ctx.inputs[0].size(1), C = model_->embed->options.embedding_dim();
  const auto act_options = torch::TensorOptions().dtype(torch::kFloat).device(dist_.device());
  for (auto& p : params_) p.tensor.mutable_grad() = at::Tensor();

  const auto& list = schedule_.actions[me];
  std::vector<Span> spans(list.size());
  std::vector<double> cpu(list.size(), 0.0);           // CPU seconds of this thread per action
  std::vector<bool> posted_early(list.size(), false);  // SENDs an F&B posted ahead of their turn
  double busy = 0;
  auto now_s = [&] { return std::chrono::duration<double>(Clock::now() - ctx.t0).count(); };
  auto flush_batch = [&] {
    if (ctx.batch.empty()) return;
    auto works = dist_.batch_isend_irecv(ctx.batch);
    for (auto& w : works) dist_.wait(w, "batched send/recv before a compute");
    ctx.batch.clear();
    ctx.batch_what.clear();
  };

  dist_.barrier(pipe_);
  ctx.t0 = Clock::now();
  const double process_cpu0 = process_cpu_s(), thread_cpu0 = thread_cpu_s();
  for (size_t i = 0; i < list.size(); ++i) {
    if (options_.debug_exit_after >= 0 && static_cast<int>(i) == options_.debug_exit_after) {
      std::fprintf(stderr, "debug: pipeline.debug_exit_after=%d: rank %d exits now on purpose\n",
                   options_.debug_exit_after, me);
      std::fflush(stderr);
      std::_Exit(17);
    }
    const Action& a = list[i];
    if (posted_early[i]) continue;
    if (a.op == OpKind::kSend || a.op == OpKind::kRecv) {
      const double post_start = now_s();  // the span of a SEND/RECV is the time to post it
      const double post_cpu = thread_cpu_s();
      const int id = detail::message_id(schedule_, a.payload, a.unit);
      const int tag = message_tag(schedule_, a.payload, a.unit);
      const std::string what = describe(a) + fmt::format(" on rank {}", me);
      at::Tensor t;
      if (a.op == OpKind::kSend) {
        auto& st = ctx.units.at(detail::unit_id(schedule_, a.unit));
        t = (a.payload == Payload::kActivation ? st.output.detach() : st.d_input).contiguous();
      } else {
        t = torch::empty({b, T, C}, act_options);
      }
      if (batched_) {
        ctx.batch.push_back({a.op == OpKind::kSend, t, ranks_[a.peer], tag});
        ctx.batch_what.push_back(what);
        if (a.op == OpKind::kRecv) ctx.recvs[id] = {c10::intrusive_ptr<c10d::Work>(), t, what};
      } else if (a.op == OpKind::kSend) {
        ctx.sends.push_back({dist_.isend(t, ranks_[a.peer], tag), t, what});
      } else {
        ctx.recvs[id] = {dist_.irecv(t, ranks_[a.peer], tag), t, what};
      }
      spans[i] = {post_start, now_s()};
      cpu[i] = thread_cpu_s() - post_cpu;
      continue;
    }
    flush_batch();
    wait_inputs(a, ctx);
    const double start = now_s();  // inputs are in: waiting on a RECV is bubble, not work
    const double start_cpu = thread_cpu_s();
    double early_post_cpu = 0;  // SENDs an F&B posts inside it count as theirs
    switch (a.op) {
      case OpKind::kF: {
        ForwardStream stream(forward_streams_, dist_.device(), a.unit.dir);
        forward(a.unit, ctx);
        break;
      }
      case OpKind::kB:
        backward(a.unit, /*defer_weight=*/true, ctx);
        break;
      case OpKind::kW:
        weight(a.unit, ctx);
        break;
      case OpKind::kBW:
        backward(a.unit, /*defer_weight=*/false, ctx);
        break;
      case OpKind::kFB: {
        // One thread queues both halves: the forward first, then its activation's SEND (listed
        // right after this action) is posted at once, so it travels while the backward computes.
        // On CPU the halves run one after the other; on CUDA the forward is on its direction's
        // stream and the backward on the other direction's (ForwardStream), so they overlap.
        ForwardStream stream(forward_streams_, dist_.device(), a.unit.dir);
        forward(a.unit, ctx);
        if (!batched_) {
          for (size_t j = i + 1; j < list.size() && !list[j].is_compute(); ++j) {
            if (list[j].op != OpKind::kSend || list[j].payload != Payload::kActivation || !(list[j].unit == a.unit))
              continue;
            const double post_start = now_s(), post_cpu = thread_cpu_s();
            at::Tensor t = ctx.units.at(detail::unit_id(schedule_, a.unit)).output.detach().contiguous();
            ctx.sends.push_back(
                {dist_.isend(t, ranks_[list[j].peer], message_tag(schedule_, Payload::kActivation, a.unit)), t,
                 describe(list[j]) + fmt::format(" on rank {}", me)});
            posted_early[j] = true;
            spans[j] = {post_start, now_s()};
            cpu[j] = thread_cpu_s() - post_cpu;
            early_post_cpu += cpu[j];
          }
        }
        stream.leave();  // the SENDs above were posted on the forward's stream, as NCCL must see it
        backward(a.bwd, /*defer_weight=*/false, ctx);
        break;
      }
      default:
        break;
    }
    // On CUDA the work is only queued: wait for it so that the span is the compute's.
    if (dist_.device().is_cuda())
      c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(dist_.device()).synchronize();
    const double end = now_s();
    spans[i] = {start, end};
    cpu[i] = thread_cpu_s() - start_cpu - early_post_cpu;
    busy += end - start;
  }
  flush_batch();
  for (auto& s : ctx.sends) dist_.wait(s.work, s.what);
  ctx.sends.clear();
  for (const auto& l : ctx.losses) ctx.loss_sum += l.item<double>() / schedule_.microbatches;
  const double local_end = now_s();
  const double background_cpu = (process_cpu_s() - process_cpu0) - (thread_cpu_s() - thread_cpu0);
  if (schedule_.kind == ScheduleKind::kDualPipe) reduce_mirrors();
  if (!embed_pair_.empty()) reduce_shared_embedding();

  // Everyone learns the loss, each rank's busy time and spans (one all-reduce of a table).
  const int R = schedule_.ranks;
  size_t max_actions = 0;
  for (const auto& l : schedule_.actions) max_actions = std::max(max_actions, l.size());
  // Row: loss, busy, local end, background CPU, then (start, end) per action, then CPU per action.
  const int64_t n = static_cast<int64_t>(max_actions);
  auto table = torch::zeros({R, 3 * n + 4}, torch::kDouble);
  auto row = table[me];
  row[0] = ctx.loss_sum;
  row[1] = busy;
  row[2] = local_end;
  row[3] = background_cpu;
  for (size_t i = 0; i < spans.size(); ++i) {
    row[4 + 2 * i] = spans[i].start;
    row[5 + 2 * i] = spans[i].end;
    row[4 + 2 * n + i] = cpu[i];
  }
  std::vector<at::Tensor> v{table.to(dist_.device())};
  dist_.all_reduce(v, c10d::ReduceOp::SUM, pipe_);
  table = v[0].cpu();
  StepResult out;
  out.busy.resize(R);
  out.spans.resize(R);
  out.cpu.resize(R);
  out.background_cpu.resize(R);
  for (int r = 0; r < R; ++r) {
    auto acc = table[r];
    out.loss += acc[0].item<double>();
    out.busy[r] = acc[1].item<double>();
    out.seconds = std::max(out.seconds, acc[2].item<double>());
    out.background_cpu[r] = acc[3].item<double>();
    out.spans[r].resize(schedule_.actions[r].size());
    out.cpu[r].resize(schedule_.actions[r].size());
    for (size_t i = 0; i < out.spans[r].size(); ++i) {
      out.spans[r][i] = {acc[4 + 2 * i].item<double>(), acc[5 + 2 * i].item<double>()};
      out.cpu[r][i] = acc[4 + 2 * n + i].item<double>();
    }
  }
  return out;
}

void PipelineExecutor::reduce_shared_embedding() {
  // Only the two ranks of the pair take part; a rank outside it holds neither copy.
  if (std::find(embed_pair_.begin(), embed_pair_.end(), me_) == embed_pair_.end()) return;
  auto& w = model_->embed->weight;
  if (!w.grad().defined()) w.mutable_grad() = torch::zeros_like(w);
  std::vector<at::Tensor> g{w.grad()};  // reduced in place
  dist_.all_reduce(g, c10d::ReduceOp::SUM, &dist_.group({ranks_[embed_pair_[0]], ranks_[embed_pair_[1]]}));
}

void PipelineExecutor::after_optimizer_step() {
  std::vector<std::shared_ptr<nn::MoEImpl>> layers;
  for (int s : held_)
    for (int64_t b = ranges_[s].begin; b < ranges_[s].end; ++b)
      if (const auto& m = model_->blocks[b]->moe; m && m->config().loss_free) layers.push_back(m.ptr());
  if (std::find(held_.begin(), held_.end(), schedule_.stages - 1) != held_.end())  // the MTP blocks
    for (const auto& mtp : model_->mtp)
      if (const auto& m = mtp->block->moe; m && m->config().loss_free) layers.push_back(m.ptr());
  if (layers.empty()) return;
  if (schedule_.kind == ScheduleKind::kDualPipe) {
    // Both copies list the same held stages in the same order: one all-reduce of all the loads.
    const int mirror = schedule_.ranks - 1 - me_;
    sum_step_loads(dist_, layers, &dist_.group({ranks_[std::min(me_, mirror)], ranks_[std::max(me_, mirror)]}));
  }
  for (const auto& m : layers) m->update_bias();
}

SequentialReference sequential_reference(nn::Transformer& model, const at::Tensor& inputs, const at::Tensor& targets,
                                         int M, double mtp_loss_weight) {
  model->zero_grad(/*set_to_none=*/true);
  SequentialReference ref;
  const auto dev = model->embed->weight.device();
  auto xs = inputs.to(dev).chunk(M, 0), ys = targets.to(dev).chunk(M, 0);
  for (int m = 0; m < M; ++m) {
    nn::LmLoss parts;
    const at::Tensor h = model->run_blocks(model->embed_tokens(xs[m]), 0, model->n_layers());
    at::Tensor loss = model->head_objective(h, xs[m], ys[m], mtp_loss_weight, &parts);
    ref.loss += parts.main.item<double>() / M;
    const at::Tensor aux = model->aux_loss(0, model->n_layers());
    (aux.defined() ? loss + aux : loss).backward(torch::full({}, 1.0 / M, loss.options()));
  }
  for (const auto& p : model->named_parameters())
    if (p.value().grad().defined()) ref.grads[p.key()] = p.value().grad().detach().clone();
  model->zero_grad(/*set_to_none=*/true);
  for (const auto& m : model->moe_layers()) {
    m->set_step_load({});  // the reference's forwards are not the step's
    m->take_load();
  }
  return ref;
}

void PipelineExecutor::reduce_mirrors() {
  // Rank r and rank R-1-r hold the same two stages (each serving one direction): sum their
  // gradients so both copies carry the gradient of the whole batch.
  const int mirror = schedule_.ranks - 1 - me_;
  std::vector<torch::Tensor> params;
  for (auto& p : params_) params.push_back(p.tensor);
  reduce_gradients(dist_, params, &dist_.group({ranks_[std::min(me_, mirror)], ranks_[std::max(me_, mirror)]}));
}

}  // namespace ts::parallel
