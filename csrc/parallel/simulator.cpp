// simulate(): the timing model of simulator.h; the README's bubble formulas.
#include "csrc/parallel/simulator.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "csrc/parallel/schedule_internal.h"

namespace ts::parallel {

double cost_of(OpKind op, const Costs& c) {
  switch (op) {
    case OpKind::kF:
      return c.F;
    case OpKind::kB:
      return c.B;
    case OpKind::kW:
      return c.W;
    case OpKind::kFB:
      return c.FB;
    case OpKind::kBW:
      return c.B + c.W;
    case OpKind::kSend:
    case OpKind::kRecv:
      return c.post;
  }
  return 0;
}

Timeline simulate(const Schedule& s, const Costs& c) {
  for (double v : {c.F, c.B, c.W, c.FB, c.p2p, c.post})
    if (!std::isfinite(v) || v < 0)
      throw std::invalid_argument("simulate: costs must be finite and >= 0 (F=" + std::to_string(c.F) + " B=" +
                                  std::to_string(c.B) + " W=" + std::to_string(c.W) + " FB=" + std::to_string(c.FB) +
                                  " p2p=" + std::to_string(c.p2p) + " post=" + std::to_string(c.post) + ")");
  const ValidationReport rep = validate(s);
  if (!rep.ok) throw std::invalid_argument("simulate: invalid schedule:\n" + rep.summary());

  const int R = s.ranks;
  Timeline tl;
  tl.spans.resize(R);
  tl.busy.assign(R, 0);
  // Ready times; NaN = not produced yet. A valid schedule always completes the loop below.
  const double kNotYet = std::nan("");
  std::vector<double> f_end(detail::unit_count(s), kNotYet), b_end(detail::unit_count(s), kNotYet);
  std::vector<double> posted(detail::message_count(s), kNotYet);
  std::vector<double> clock(R, 0);
  std::vector<size_t> pc(R, 0);
  std::vector<detail::Need> need;
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < R; ++r) {
      while (pc[r] < s.actions[r].size()) {
        const Action& a = s.actions[r][pc[r]];
        double start = clock[r];
        bool ready = true;
        if (a.is_compute()) {
          need.clear();
          detail::needs(s, r, a, &need);
          for (const detail::Need& n : need) {
            const double t = n.from_rank == r
                                 ? (n.what == detail::Need::kF ? f_end : b_end)[detail::unit_id(s, n.unit)]
                                 : posted[detail::message_id(s, detail::payload_of(n.what), n.unit)] + c.p2p;
            if (std::isnan(t)) ready = false;
            start = std::max(start, t);
          }
        }
        if (!ready) break;
        const double end = start + cost_of(a.op, c);
        if (a.op == OpKind::kSend) posted[detail::message_id(s, a.payload, a.unit)] = end;  // once posted
        if (const Unit* f = a.forward_unit()) f_end[detail::unit_id(s, *f)] = end;
        if (const Unit* b = a.input_backward_unit()) b_end[detail::unit_id(s, *b)] = end;
        tl.spans[r].push_back({start, end});
        if (a.is_compute()) {
          tl.busy[r] += end - start;
          tl.total = std::max(tl.total, end);
        }
        clock[r] = end;
        ++pc[r];
        progress = true;
      }
    }
  }
  for (int r = 0; r < R; ++r)  // unreachable for a schedule validate() accepted
    if (pc[r] != s.actions[r].size()) throw std::logic_error("simulate: rank " + std::to_string(r) + " stuck");

  tl.bubble.resize(R);
  for (int r = 0; r < R; ++r) {
    tl.bubble[r] = tl.total - tl.busy[r];
    tl.critical_bubble = std::max(tl.critical_bubble, tl.bubble[r]);
  }
  tl.peak_activations = rep.peak_activations;
  return tl;
}

namespace {

int pp_of(ScheduleKind kind, int ranks) { return kind == ScheduleKind::kDualPipeV ? 2 * ranks : ranks; }

std::string common_preconditions(ScheduleKind kind, int ranks, int microbatches, const Costs& c) {
  std::string why;
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) why += (why.empty() ? "" : "; ") + what;
  };
  try {
    make_schedule(kind, ranks, microbatches);
  } catch (const std::invalid_argument& e) {
    need(false, e.what());
  }
  need(c.p2p == 0, "p2p == 0");
  need(c.post == 0, "post == 0");
  need(c.F > 0 && c.B > 0 && c.W > 0, "F, B, W > 0");
  const int pp = pp_of(kind, ranks);
  switch (kind) {
    case ScheduleKind::k1F1B:
      break;
    case ScheduleKind::kZB1P:
      need(c.W <= c.F && c.W <= c.B, "W <= F and W <= B");
      need(microbatches >= pp, "microbatches >= PP");
      break;
    case ScheduleKind::kDualPipe:
    case ScheduleKind::kDualPipeV:
      need(c.W <= c.B && c.B <= c.F, "W <= B <= F");
      need(c.FB >= std::max(c.F, c.B + c.W) && c.FB <= c.F + c.B + c.W, "max(F, B+W) <= FB <= F+B+W");
      break;
  }
  return why;
}

}  // namespace

double formula_bubble(ScheduleKind kind, int ranks, const Costs& c) {
  const double pp = pp_of(kind, ranks);
  const double b_full = c.B + c.W;  // the README's B
  switch (kind) {
    case ScheduleKind::k1F1B:
      return (pp - 1) * (c.F + b_full);
    case ScheduleKind::kZB1P:
      return (pp - 1) * (c.F + b_full - 2 * c.W);
    case ScheduleKind::kDualPipe:
    case ScheduleKind::kDualPipeV:
      return (pp / 2 - 1) * (c.FB + b_full - 3 * c.W);
  }
  return 0;
}

double closed_form_bubble(ScheduleKind kind, int ranks, const Costs& c) {
  if (kind == ScheduleKind::kDualPipe || kind == ScheduleKind::kDualPipeV)
    return (pp_of(kind, ranks) / 2.0 - 1) * (c.FB + c.F - 2 * c.W);
  return formula_bubble(kind, ranks, c);
}

std::string formula_preconditions(ScheduleKind kind, int ranks, int microbatches, const Costs& c) {
  std::string why = common_preconditions(kind, ranks, microbatches, c);
  if ((kind == ScheduleKind::kDualPipe || kind == ScheduleKind::kDualPipeV) && c.F != c.B)
    why += std::string(why.empty() ? "" : "; ") + "F == B";
  return why;
}

std::string closed_form_preconditions(ScheduleKind kind, int ranks, int microbatches, const Costs& c) {
  return common_preconditions(kind, ranks, microbatches, c);
}

}  // namespace ts::parallel
