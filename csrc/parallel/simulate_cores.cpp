// simulate_shared_cores(): an event-driven processor-sharing version of simulate().
#include "csrc/parallel/simulate_cores.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "csrc/parallel/schedule_internal.h"

namespace ts::parallel {

Timeline simulate_shared_cores(const Schedule& s, const Costs& c, double cores, double bw, double message_cpu) {
  if (!(cores > 0) || !std::isfinite(cores))
    throw std::invalid_argument("simulate_shared_cores: cores must be > 0, got " + std::to_string(cores));
  if (!(message_cpu >= 0) || !std::isfinite(message_cpu))
    throw std::invalid_argument("simulate_shared_cores: message_cpu must be finite and >= 0, got " +
                                std::to_string(message_cpu));
  for (double v : {c.F, c.B, c.W, c.FB, c.p2p, c.post})
    if (!std::isfinite(v) || v < 0) throw std::invalid_argument("simulate_shared_cores: costs must be finite and >= 0");
  const ValidationReport rep = validate(s);
  if (!rep.ok) throw std::invalid_argument("simulate_shared_cores: invalid schedule:\n" + rep.summary());

  const int R = s.ranks;
  const double kInf = std::numeric_limits<double>::infinity();
  const double kNotYet = std::nan("");
  Timeline tl;
  tl.spans.resize(R);
  tl.busy.assign(R, 0);
  for (int r = 0; r < R; ++r) tl.spans[r].resize(s.actions[r].size());
  std::vector<double> f_end(detail::unit_count(s), kNotYet), b_end(detail::unit_count(s), kNotYet);
  // arrived[m]: when message m can be used by its receiver (after p2p).
  std::vector<double> arrived(detail::message_count(s), kNotYet);
  // Messages being moved (message_cpu > 0): each is a job sharing the cores from its posting on.
  struct Transfer {
    int id;
    double start, left;
  };
  std::vector<Transfer> transfers;
  std::vector<size_t> pc(R, 0);
  std::vector<double> clock(R, 0);  // when the rank became free
  std::vector<bool> running(R, false);
  std::vector<double> left(R, 0), started(R, 0);
  std::vector<detail::Need> need;
  double now = 0;

  // A SEND is posted at time t: its message moves (a transfer job) or just travels p2p.
  auto post_send = [&](const Action& a, double t) {
    const int id = detail::message_id(s, a.payload, a.unit);
    if (message_cpu > 0)
      transfers.push_back({id, t, message_cpu});
    else
      arrived[id] = t + c.p2p;
  };
  // With c.post == 0, passes rank r's SEND/RECVs up to its next action that takes time. (With
  // c.post > 0 a posting is work of the rank like a compute, and shares the cores.)
  auto pass_messages = [&](int r) {
    while (c.post == 0 && pc[r] < s.actions[r].size() && !s.actions[r][pc[r]].is_compute()) {
      const Action& a = s.actions[r][pc[r]];
      if (a.op == OpKind::kSend) post_send(a, clock[r]);
      tl.spans[r][pc[r]] = {clock[r], clock[r]};
      ++pc[r];
    }
  };
  // When rank r's next compute may start, or inf.
  auto ready_time = [&](int r) {
    if (pc[r] == s.actions[r].size()) return kInf;
    if (!s.actions[r][pc[r]].is_compute()) return clock[r];  // a posting needs nothing
    need.clear();
    detail::needs(s, r, s.actions[r][pc[r]], &need);
    double t = clock[r];
    for (const detail::Need& n : need) {
      const double e = n.from_rank == r ? (n.what == detail::Need::kF ? f_end : b_end)[detail::unit_id(s, n.unit)]
                                        : arrived[detail::message_id(s, detail::payload_of(n.what), n.unit)];
      if (std::isnan(e)) return kInf;
      t = std::max(t, e);
    }
    return t;
  };

  for (;;) {
    // Post every SEND reached so far, then start every compute whose inputs are in by now.
    for (int r = 0; r < R; ++r)
      if (!running[r]) pass_messages(r);
    double next_ready = kInf;
    bool all_done = true;
    for (int r = 0; r < R; ++r) {
      if (running[r]) {
        all_done = false;
        continue;
      }
      const double t = ready_time(r);
      if (pc[r] < s.actions[r].size()) all_done = false;
      if (t <= now) {
        running[r] = true;
        started[r] = now;
        const OpKind op = s.actions[r][pc[r]].op;
        left[r] = op == OpKind::kBW && bw >= 0 ? bw : cost_of(op, c);
      } else {
        next_ready = std::min(next_ready, t);
      }
    }
    if (all_done && transfers.empty()) break;
    // Transfers whose SEND is posted by now share the cores with the running computes.
    auto moving = [&](const Transfer& m) { return m.start <= now; };
    int active = 0;
    for (int r = 0; r < R; ++r) active += running[r];
    for (const Transfer& m : transfers) active += moving(m);
    const double rate = active ? std::min(1.0, cores / active) : 0.0;
    double next_done = kInf;
    for (int r = 0; r < R; ++r)
      if (running[r]) next_done = std::min(next_done, now + left[r] / rate);
    for (const Transfer& m : transfers)
      next_done = std::min(next_done, moving(m) ? now + m.left / rate : m.start);  // done, or starts
    const double t_next = std::min(next_done, next_ready);
    if (!std::isfinite(t_next)) throw std::logic_error("simulate_shared_cores: no progress (schedule deadlocks)");
    for (int r = 0; r < R; ++r) {
      if (!running[r]) continue;
      // The rank(s) defining next_done finish exactly; the others lose rate * dt of work.
      if (now + left[r] / rate <= t_next) {
        left[r] = 0;
      } else {
        left[r] -= rate * (t_next - now);
      }
    }
    for (Transfer& m : transfers) {
      if (!moving(m)) continue;
      m.left = now + m.left / rate <= t_next ? 0 : m.left - rate * (t_next - now);
    }
    now = t_next;
    for (const Transfer& m : transfers)
      if (m.left <= 0) arrived[m.id] = now + c.p2p;
    transfers.erase(std::remove_if(transfers.begin(), transfers.end(), [](const Transfer& m) { return m.left <= 0; }),
                    transfers.end());
    for (int r = 0; r < R; ++r) {
      if (!running[r] || left[r] > 0) continue;
      const Action& a = s.actions[r][pc[r]];
      if (!a.is_compute()) {  // a posting is done
        if (a.op == OpKind::kSend) post_send(a, now);
        tl.spans[r][pc[r]] = {started[r], now};
        clock[r] = now;
        running[r] = false;
        ++pc[r];
        continue;
      }
      if (const Unit* f = a.forward_unit()) f_end[detail::unit_id(s, *f)] = now;
      if (const Unit* b = a.input_backward_unit()) b_end[detail::unit_id(s, *b)] = now;
      tl.spans[r][pc[r]] = {started[r], now};
      tl.busy[r] += now - started[r];
      tl.total = std::max(tl.total, now);
      clock[r] = now;
      running[r] = false;
      ++pc[r];
    }
  }
  tl.bubble.resize(R);
  for (int r = 0; r < R; ++r) {
    tl.bubble[r] = tl.total - tl.busy[r];
    tl.critical_bubble = std::max(tl.critical_bubble, tl.bubble[r]);
  }
  tl.peak_activations = peak_activations(s);
  return tl;
}

}  // namespace ts::parallel
