// Adds explicit SEND/RECV actions to a compute-only schedule.
//
// Placement rule. Run the compute order once with canonical costs (F = B = W = 1,
// FB = BW = 2) and no latency, giving every compute a [start, end) and every message a
// send time t = end of its producer. Then on each rank, after compute C(k-1):
//   1. RECVs of the messages with end(C(k-1)) <= t < end(C(k)), ordered by (t, sender,
//      sender's send order),
//   2. the SENDs of C(k-1)'s outputs,
//   3. C(k).
// Why this cannot deadlock even when a SEND blocks until its RECV is posted: give each
// action the canonical time it would run at (a RECV the end of the compute before it, a
// SEND its producer's end). A RECV's time is <= its SEND's, and at equal times a rank lists
// its RECVs before its SENDs and both before the next compute, so running every rank's
// actions in (time, RECV < SEND < compute) order respects each rank's list and finds every
// RECV posted before its SEND and every SEND posted before its consumer. That is a complete
// execution, and since blocking conditions only depend on other ranks' progress (which
// never goes back), the schedule completes under any timing. validate() re-checks this.
// Batched model (each run of SEND/RECVs between two computes is posted as one batch and
// waited on whole): let f(B) be the canonical end of the compute after batch B. An
// unfinished B waits for the peer batches P holding its RECVs' SENDs to be posted, and
// those SENDs have canonical times t < f(B). If P is not posted, its rank is stuck at an
// earlier batch B' with a compute between them, so f(B') <= t < f(B): f strictly drops
// along every chain of waits, so no chain closes into a cycle.
// Each RECV is posted at most one compute before the canonical arrival of its data, so
// receive buffers are not held long; sending right after the producer keeps the timing
// model's critical paths free of communication delays.
#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "csrc/parallel/schedule_internal.h"

namespace ts::parallel::detail {
namespace {

std::int64_t canonical_cost(OpKind op) { return (op == OpKind::kFB || op == OpKind::kBW) ? 2 : 1; }

struct PendingRecv {
  std::int64_t t_send;
  int src;
  int seq;  // position among the sender's SENDs
  Action recv;
};

}  // namespace

void insert_messages(Schedule* s) {
  const int R = s->ranks;
  const auto& order = s->actions;
  std::vector<std::vector<std::int64_t>> end(R);
  std::vector<std::int64_t> f_end(unit_count(*s), -1), b_end(unit_count(*s), -1);
  std::vector<size_t> pc(R, 0);
  std::vector<std::int64_t> clock(R, 0);
  std::vector<Need> need;
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < R; ++r) {
      while (pc[r] < order[r].size()) {
        const Action& a = order[r][pc[r]];
        need.clear();
        needs(*s, r, a, &need);
        std::int64_t t = clock[r];
        bool ready = true;
        for (const Need& n : need) {
          const std::int64_t e = (n.what == Need::kF ? f_end : b_end)[unit_id(*s, n.unit)];
          if (e < 0) ready = false;
          t = std::max(t, e);
        }
        if (!ready) break;
        clock[r] = t + canonical_cost(a.op);
        end[r].push_back(clock[r]);
        if (const Unit* f = a.forward_unit()) f_end[unit_id(*s, *f)] = clock[r];
        if (const Unit* b = a.input_backward_unit()) b_end[unit_id(*s, *b)] = clock[r];
        ++pc[r];
        progress = true;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    if (pc[r] != order[r].size())
      throw std::logic_error("insert_messages: the compute order of rank " + std::to_string(r) +
                             " cannot run (dependency cycle); generator bug");

  // sends[r][k]: the SENDs after compute k of rank r; recvs[r][k]: RECVs before compute k.
  std::vector<std::vector<std::vector<Action>>> sends(R);
  std::vector<std::vector<std::vector<PendingRecv>>> recvs(R);
  for (int r = 0; r < R; ++r) {
    sends[r].resize(order[r].size());
    recvs[r].resize(order[r].size() + 1);
  }
  std::vector<Message> msgs;
  for (int r = 0; r < R; ++r) {
    int seq = 0;
    for (size_t k = 0; k < order[r].size(); ++k) {
      msgs.clear();
      outgoing(*s, r, order[r][k], &msgs);
      for (const Message& m : msgs) {
        Action send;
        send.op = OpKind::kSend;
        send.unit = m.producer;
        send.peer = m.dst;
        send.payload = m.payload;
        sends[r][k].push_back(send);
        Action recv = send;
        recv.op = OpKind::kRecv;
        recv.peer = r;
        const std::int64_t t = end[r][k];
        const auto& dst_end = end[m.dst];
        const size_t slot = std::upper_bound(dst_end.begin(), dst_end.end(), t) - dst_end.begin();
        recvs[m.dst][slot].push_back({t, r, seq++, recv});
      }
    }
  }

  std::vector<std::vector<Action>> full(R);
  for (int r = 0; r < R; ++r) {
    const size_t n = order[r].size();
    for (size_t k = 0; k <= n; ++k) {
      auto& group = recvs[r][k];
      std::sort(group.begin(), group.end(), [](const PendingRecv& x, const PendingRecv& y) {
        if (x.t_send != y.t_send) return x.t_send < y.t_send;
        if (x.src != y.src) return x.src < y.src;
        return x.seq < y.seq;
      });
      for (const PendingRecv& p : group) full[r].push_back(p.recv);
      if (k > 0) full[r].insert(full[r].end(), sends[r][k - 1].begin(), sends[r][k - 1].end());
      if (k < n) full[r].push_back(order[r][k]);
    }
  }
  s->actions = std::move(full);
}

}  // namespace ts::parallel::detail
