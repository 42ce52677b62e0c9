// Schedule kinds, placement, the dependency rules, make_schedule and the table properties.
#include "csrc/parallel/schedule.h"

#include <algorithm>
#include <cctype>
#include <iterator>
#include <stdexcept>
#include <string>

#include "csrc/parallel/schedule_internal.h"

namespace ts::parallel {
namespace {

// Names in enum order (both enums count up from 0), so an enum value indexes its name.
constexpr std::string_view kScheduleKindNames[] = {"1f1b", "zb1p", "dualpipe", "dualpipev"};
constexpr std::string_view kOpKindNames[] = {"F", "B", "W", "FB", "BW", "SEND", "RECV"};
static_assert(std::size(kScheduleKindNames) == static_cast<size_t>(ScheduleKind::kDualPipeV) + 1);
static_assert(std::size(kOpKindNames) == static_cast<size_t>(OpKind::kRecv) + 1);

std::string unit_text(const Unit& u) {
  std::string t = "mb=" + std::to_string(u.mb) + ",s=" + std::to_string(u.stage);
  if (u.dir != 0) t += ",dir=" + std::to_string(u.dir);
  return t;
}

}  // namespace

ScheduleKind parse_schedule_kind(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string valid;
  for (size_t k = 0; k < std::size(kScheduleKindNames); ++k) {
    if (lower == kScheduleKindNames[k]) return static_cast<ScheduleKind>(k);
    valid += (valid.empty() ? "" : ", ") + std::string(kScheduleKindNames[k]);
  }
  throw std::invalid_argument("unknown pipeline schedule '" + std::string(name) + "'; valid names: " + valid);
}

std::string_view schedule_kind_name(ScheduleKind kind) {
  const auto k = static_cast<size_t>(kind);
  if (k >= std::size(kScheduleKindNames)) throw std::invalid_argument("schedule_kind_name: bad ScheduleKind value");
  return kScheduleKindNames[k];
}

std::string_view op_kind_name(OpKind op) {
  const auto k = static_cast<size_t>(op);
  return k < std::size(kOpKindNames) ? kOpKindNames[k] : "?";  // "?": a corrupted value; validate() reports it
}

const Unit* Action::forward_unit() const { return (op == OpKind::kF || op == OpKind::kFB) ? &unit : nullptr; }

const Unit* Action::input_backward_unit() const {
  if (op == OpKind::kB || op == OpKind::kBW) return &unit;
  return op == OpKind::kFB ? &bwd : nullptr;
}

const Unit* Action::weight_backward_unit() const {
  if (op == OpKind::kW || op == OpKind::kBW) return &unit;
  return op == OpKind::kFB ? &bwd : nullptr;
}

std::string describe(const Action& a) {
  switch (a.op) {
    case OpKind::kFB:
      return "FB(F " + unit_text(a.unit) + " | BW " + unit_text(a.bwd) + ")";
    case OpKind::kSend:
    case OpKind::kRecv: {
      const bool send = a.op == OpKind::kSend;
      return std::string(send ? "SEND " : "RECV ") + (a.payload == Payload::kActivation ? "act(" : "grad(") +
             unit_text(a.unit) + ")" + (send ? "->r" : "<-r") + std::to_string(a.peer);
    }
    default:
      return std::string(op_kind_name(a.op)) + "(" + unit_text(a.unit) + ")";
  }
}

int Schedule::direction_of(int mb) const { return (kind == ScheduleKind::kDualPipe && mb >= microbatches / 2) ? 1 : 0; }

int Schedule::rank_of(const Unit& u) const {
  switch (kind) {
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZB1P:
      return u.stage;
    case ScheduleKind::kDualPipe:
      return u.dir == 0 ? u.stage : ranks - 1 - u.stage;
    case ScheduleKind::kDualPipeV:
      return u.stage < ranks ? u.stage : 2 * ranks - 1 - u.stage;
  }
  return -1;
}

Schedule make_schedule(ScheduleKind kind, int ranks, int microbatches) {
  const std::string what = "make_schedule(" + std::string(schedule_kind_name(kind)) +
                           ", ranks=" + std::to_string(ranks) + ", microbatches=" + std::to_string(microbatches) +
                           "): ";
  if (ranks < 1) throw std::invalid_argument(what + "ranks must be >= 1");
  if (microbatches < 1) throw std::invalid_argument(what + "microbatches must be >= 1");
  if (kind == ScheduleKind::kDualPipe) {
    if (ranks % 2 != 0) throw std::invalid_argument(what + "DualPipe needs an even number of ranks");
    if (microbatches % 2 != 0 || microbatches < 2 * ranks)
      throw std::invalid_argument(what +
                                  "DualPipe needs an even number of micro-batches, at least "
                                  "2*ranks (half enter from each end)");
  }
  if (kind == ScheduleKind::kDualPipeV && microbatches < 2 * ranks)
    throw std::invalid_argument(what + "DualPipeV needs at least 2*ranks micro-batches");

  Schedule s;
  s.kind = kind;
  s.ranks = ranks;
  s.stages = kind == ScheduleKind::kDualPipeV ? 2 * ranks : ranks;
  s.microbatches = microbatches;
  switch (kind) {
    case ScheduleKind::k1F1B:
      s.actions = detail::order_1f1b(s);
      break;
    case ScheduleKind::kZB1P:
      s.actions = detail::order_zb1p(s);
      break;
    case ScheduleKind::kDualPipe:
    case ScheduleKind::kDualPipeV:
      s.actions = detail::order_dual(s);
      break;
  }
  detail::insert_messages(&s);
  return s;
}

int message_tag(const Schedule& s, Payload payload, const Unit& producer) {
  return detail::message_id(s, payload, producer);
}

namespace detail {

void needs(const Schedule& s, int rank, const Action& a, std::vector<Need>* out) {
  if (const Unit* f = a.forward_unit(); f && f->stage > 0) {
    const Unit prev = s.unit(f->mb, f->stage - 1);
    out->push_back({Need::kF, prev, s.rank_of(prev)});
  }
  if (const Unit* b = a.input_backward_unit()) {
    out->push_back({Need::kF, *b, rank});  // its own forward, always on this rank
    if (b->stage + 1 < s.stages) {
      const Unit next = s.unit(b->mb, b->stage + 1);
      out->push_back({Need::kB, next, s.rank_of(next)});
    }
  }
  if (a.op == OpKind::kW) out->push_back({Need::kB, a.unit, rank});
}

void outgoing(const Schedule& s, int rank, const Action& a, std::vector<Message>* out) {
  if (const Unit* f = a.forward_unit(); f && f->stage + 1 < s.stages) {
    const int dst = s.rank_of(s.unit(f->mb, f->stage + 1));
    if (dst != rank) out->push_back({Payload::kActivation, *f, dst});
  }
  if (const Unit* b = a.input_backward_unit(); b && b->stage > 0) {
    const int dst = s.rank_of(s.unit(b->mb, b->stage - 1));
    if (dst != rank) out->push_back({Payload::kGradient, *b, dst});
  }
}

}  // namespace detail

std::vector<int> peak_activations(const Schedule& s) {
  std::vector<int> peak(s.actions.size(), 0);
  for (size_t r = 0; r < s.actions.size(); ++r) {
    int live = 0;
    for (const Action& a : s.actions[r]) {
      if (a.forward_unit()) ++live;  // allocated when the forward starts
      peak[r] = std::max(peak[r], live);
      if (a.weight_backward_unit()) --live;  // freed when its weight gradient is done
    }
  }
  return peak;
}

TableRow table_row(const Schedule& s) {
  TableRow row;
  row.devices = s.ranks;
  for (const auto& list : s.actions) {
    std::vector<int> held;
    for (const Action& a : list) {
      if (!a.is_compute()) continue;
      for (int stage : {a.unit.stage, a.op == OpKind::kFB ? a.bwd.stage : a.unit.stage})
        if (std::find(held.begin(), held.end(), stage) == held.end()) held.push_back(stage);
    }
    row.params_per_device = std::max(row.params_per_device, static_cast<int>(held.size()));
  }
  for (int p : peak_activations(s)) row.activations_per_device = std::max(row.activations_per_device, p);
  return row;
}

TableRow readme_table_row(ScheduleKind kind, int pp) {
  switch (kind) {
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZB1P:
      return {1, pp, pp};
    case ScheduleKind::kDualPipe:
      return {2, pp + 1, pp};
    case ScheduleKind::kDualPipeV:
      return {2, pp + 1, pp / 2};
  }
  return {};
}

}  // namespace ts::parallel
