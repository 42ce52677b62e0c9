// validate(): structure, exactly-once, local order, messages, channel order, deadlock.
#include <algorithm>
#include <string>

#include "csrc/parallel/schedule_internal.h"

namespace ts::parallel {
namespace {

constexpr size_t kMaxErrors = 64;

class Checker {
 public:
  explicit Checker(const Schedule& s) : s_(s) {}

  void run(ValidationReport* rep) {
    if (!check_shape() || !check_fields() || !check_counts() || !check_local_order() || !check_messages() ||
        !check_channels()) {
      return finish(rep);
    }
    check_deadlock_per_op();
    check_deadlock_batched();
    finish(rep);
  }

 private:
  using Need = detail::Need;

  void error(int r, size_t i, const std::string& what) {
    error("rank " + std::to_string(r) + " #" + std::to_string(i) + " " + describe(s_.actions[r][i]) + ": " + what);
  }
  void error(const std::string& what) {
    if (errors_.size() < kMaxErrors)
      errors_.push_back(what);
    else if (errors_.size() == kMaxErrors)
      errors_.push_back("... further errors omitted");
  }
  std::string unit_name(const Unit& u) const {
    return "(mb=" + std::to_string(u.mb) + ",s=" + std::to_string(u.stage) + ")";
  }
  Unit unit_of_id(int id) const { return s_.unit(id / s_.stages, id % s_.stages); }
  int msg(Payload p, const Unit& u) const { return detail::message_id(s_, p, u); }

  bool check_shape() {
    const int want_stages = s_.kind == ScheduleKind::kDualPipeV ? 2 * s_.ranks : s_.ranks;
    if (s_.ranks < 1 || s_.microbatches < 1 || s_.stages != want_stages)
      error("bad shape: ranks=" + std::to_string(s_.ranks) + " stages=" + std::to_string(s_.stages) + " (expected " +
            std::to_string(want_stages) + ") microbatches=" + std::to_string(s_.microbatches));
    else if (static_cast<int>(s_.actions.size()) != s_.ranks)
      error("actions has " + std::to_string(s_.actions.size()) + " rank lists, expected " + std::to_string(s_.ranks));
    return errors_.empty();
  }

  bool unit_ok(const Unit& u) const {
    return u.mb >= 0 && u.mb < s_.microbatches && u.stage >= 0 && u.stage < s_.stages && u.dir == s_.direction_of(u.mb);
  }

  bool check_fields() {
    for (int r = 0; r < s_.ranks; ++r) {
      for (size_t i = 0; i < s_.actions[r].size(); ++i) {
        const Action& a = s_.actions[r][i];
        if (static_cast<int>(a.op) > static_cast<int>(OpKind::kRecv)) {
          error(r, i, "unknown op");
        } else if (!unit_ok(a.unit) || (a.op == OpKind::kFB && !unit_ok(a.bwd))) {
          error(r, i, "micro-batch, stage or direction out of range");
        } else if (a.is_compute()) {
          if (s_.rank_of(a.unit) != r || (a.op == OpKind::kFB && s_.rank_of(a.bwd) != r))
            error(r, i, "unit placed on rank " + std::to_string(s_.rank_of(a.unit)) + ", not here");
        } else if (a.peer < 0 || a.peer >= s_.ranks || a.peer == r) {
          error(r, i, "bad peer rank");
        } else if (a.payload != Payload::kActivation && a.payload != Payload::kGradient) {
          error(r, i, "unknown payload");
        }
      }
    }
    return errors_.empty();
  }

  // Each unit's forward, input backward and weight backward exactly once; records where.
  bool check_counts() {
    const int n = detail::unit_count(s_);
    f_pos_.assign(n, -1);
    b_pos_.assign(n, -1);
    std::vector<int> nf(n, 0), nb(n, 0), nw(n, 0);
    for (int r = 0; r < s_.ranks; ++r) {
      for (size_t i = 0; i < s_.actions[r].size(); ++i) {
        const Action& a = s_.actions[r][i];
        if (const Unit* u = a.forward_unit()) ++nf[id(*u)], f_pos_[id(*u)] = static_cast<int>(i);
        if (const Unit* u = a.input_backward_unit()) ++nb[id(*u)], b_pos_[id(*u)] = static_cast<int>(i);
        if (const Unit* u = a.weight_backward_unit()) ++nw[id(*u)];
      }
    }
    for (int u = 0; u < n; ++u) {
      const auto say = [&](const char* what, int count) {
        if (count != 1)
          error("unit " + unit_name(unit_of_id(u)) + ": " + what + " runs " + std::to_string(count) +
                " times, expected once");
      };
      say("forward", nf[u]);
      say("input backward", nb[u]);
      say("weight backward", nw[u]);
    }
    return errors_.empty();
  }

  int id(const Unit& u) const { return detail::unit_id(s_, u); }

  // Inputs produced on the same rank must come earlier in its list.
  bool check_local_order() {
    std::vector<Need> need;
    for (int r = 0; r < s_.ranks; ++r) {
      for (size_t i = 0; i < s_.actions[r].size(); ++i) {
        const Action& a = s_.actions[r][i];
        if (!a.is_compute()) continue;
        need.clear();
        detail::needs(s_, r, a, &need);
        for (const Need& n : need) {
          if (n.from_rank != r) continue;
          const int at = (n.what == Need::kF ? f_pos_ : b_pos_)[id(n.unit)];
          if (at >= static_cast<int>(i))
            error(r, i,
                  std::string("needs ") + (n.what == Need::kF ? "F" : "B") + unit_name(n.unit) +
                      ", which this rank runs later (#" + std::to_string(at) + ")");
        }
      }
    }
    return errors_.empty();
  }

  // One SEND after the producer and one RECV before the consumer per cross-rank input.
  bool check_messages() {
    const int n = detail::message_count(s_);
    src_.assign(n, -1);
    dst_.assign(n, -1);
    std::vector<int> consumer_pos(n, -1);
    std::vector<Need> need;
    for (int r = 0; r < s_.ranks; ++r) {
      for (size_t i = 0; i < s_.actions[r].size(); ++i) {
        need.clear();
        if (s_.actions[r][i].is_compute()) detail::needs(s_, r, s_.actions[r][i], &need);
        for (const Need& nd : need) {
          if (nd.from_rank == r) continue;
          const int m = msg(detail::payload_of(nd.what), nd.unit);
          src_[m] = nd.from_rank;
          dst_[m] = r;
          consumer_pos[m] = static_cast<int>(i);
        }
      }
    }
    std::vector<int> sends(n, 0), recvs(n, 0);
    for (int r = 0; r < s_.ranks; ++r) {
      for (size_t i = 0; i < s_.actions[r].size(); ++i) {
        const Action& a = s_.actions[r][i];
        if (a.is_compute()) continue;
        const int m = msg(a.payload, a.unit);
        const bool send = a.op == OpKind::kSend;
        if (src_[m] < 0 || (send ? src_[m] != r || dst_[m] != a.peer : dst_[m] != r || src_[m] != a.peer)) {
          error(r, i, "no compute on the peer needs this message from/to this rank");
          continue;
        }
        if (++(send ? sends : recvs)[m] > 1) error(r, i, "duplicate");
        const int producer = (a.payload == Payload::kActivation ? f_pos_ : b_pos_)[id(a.unit)];
        if (send && producer > static_cast<int>(i))
          error(r, i, "sent before its producer runs (#" + std::to_string(producer) + ")");
        if (!send && consumer_pos[m] < static_cast<int>(i))
          error(r, i, "posted after its consumer (#" + std::to_string(consumer_pos[m]) + ")");
      }
    }
    for (int m = 0; m < n; ++m) {
      if (src_[m] < 0) continue;
      const std::string what = std::string(m < n / 2 ? "activation " : "gradient ") +
                               unit_name(unit_of_id(m % (n / 2))) + " r" + std::to_string(src_[m]) + "->r" +
                               std::to_string(dst_[m]);
      if (sends[m] == 0) error("missing SEND of " + what);
      if (recvs[m] == 0) error("missing RECV of " + what);
    }
    return errors_.empty();
  }

  // Both ends of each (src, dst) channel list its messages in the same order.
  bool check_channels() {
    const int R = s_.ranks;
    std::vector<std::vector<int>> sent(R * R), received(R * R);
    for (int r = 0; r < R; ++r)
      for (const Action& a : s_.actions[r]) {
        if (a.op == OpKind::kSend) sent[r * R + a.peer].push_back(msg(a.payload, a.unit));
        if (a.op == OpKind::kRecv) received[a.peer * R + r].push_back(msg(a.payload, a.unit));
      }
    for (int c = 0; c < R * R; ++c) {
      if (sent[c] == received[c]) continue;
      const auto diff = std::mismatch(sent[c].begin(), sent[c].end(), received[c].begin());
      error("channel r" + std::to_string(c / R) + "->r" + std::to_string(c % R) +
            ": SEND and RECV orders differ at message " + std::to_string(diff.first - sent[c].begin()));
    }
    return errors_.empty();
  }

  // Model 1, per operation: RECV posts and continues; SEND continues once the peer posted
  // the RECV; a compute continues once every remote input's SEND was posted.
  void check_deadlock_per_op() {
    const int n = detail::message_count(s_);
    std::vector<char> recv_posted(n, 0), send_posted(n, 0);
    std::vector<size_t> pc(s_.ranks, 0);
    std::vector<Need> need;
    auto blocker = [&](int r, const Action& a) -> std::string {
      if (a.op == OpKind::kSend) return "rank " + std::to_string(a.peer) + " has not posted its RECV";
      if (a.op == OpKind::kRecv) return "";
      need.clear();
      detail::needs(s_, r, a, &need);
      for (const Need& nd : need)
        if (nd.from_rank != r && !send_posted[msg(detail::payload_of(nd.what), nd.unit)])
          return "rank " + std::to_string(nd.from_rank) + " has not sent " +
                 (nd.what == Need::kF ? "activation " : "gradient ") + unit_name(nd.unit);
      return "";
    };
    for (bool progress = true; progress;) {
      progress = false;
      for (int r = 0; r < s_.ranks; ++r) {
        while (pc[r] < s_.actions[r].size()) {
          const Action& a = s_.actions[r][pc[r]];
          const int m = a.is_compute() ? -1 : msg(a.payload, a.unit);
          if (a.op == OpKind::kSend && !recv_posted[m]) break;
          if (a.is_compute() && !blocker(r, a).empty()) break;
          if (a.op == OpKind::kRecv) recv_posted[m] = 1;
          if (a.op == OpKind::kSend) send_posted[m] = 1;
          ++pc[r];
          progress = true;
        }
      }
    }
    for (int r = 0; r < s_.ranks; ++r)
      if (pc[r] < s_.actions[r].size())
        error(r, pc[r], "deadlock: blocked because " + blocker(r, s_.actions[r][pc[r]]));
  }

  // Model 2, batched: each run of SEND/RECVs between two computes is posted at once
  // (batch_isend_irecv) and waited on entirely before the rank goes on, as NCCL needs
  // since its p2p operations on one stream complete in order.
  void check_deadlock_batched() {
    const int n = detail::message_count(s_);
    std::vector<char> recv_posted(n, 0), send_posted(n, 0);
    std::vector<size_t> pc(s_.ranks, 0);
    auto batch_end = [&](int r, size_t i) {
      while (i < s_.actions[r].size() && !s_.actions[r][i].is_compute()) ++i;
      return i;
    };
    auto unmatched = [&](int r, size_t i) -> std::string {  // first op of the batch at i not matched
      for (size_t j = i; j < batch_end(r, i); ++j) {
        const Action& a = s_.actions[r][j];
        const int m = msg(a.payload, a.unit);
        if (!(a.op == OpKind::kSend ? recv_posted : send_posted)[m])
          return std::string("#")
              .append(std::to_string(j))
              .append(" ")
              .append(describe(a))
              .append(" is not matched by rank " + std::to_string(a.peer));
      }
      return "";
    };
    for (bool progress = true; progress;) {
      progress = false;
      for (int r = 0; r < s_.ranks; ++r) {
        while (pc[r] < s_.actions[r].size()) {
          if (s_.actions[r][pc[r]].is_compute()) {  // local inputs ran earlier; remote ones arrived
            ++pc[r];
            progress = true;
            continue;
          }
          const size_t end = batch_end(r, pc[r]);
          for (size_t j = pc[r]; j < end; ++j) {
            const Action& a = s_.actions[r][j];
            (a.op == OpKind::kSend ? send_posted : recv_posted)[msg(a.payload, a.unit)] = 1;
          }
          if (!unmatched(r, pc[r]).empty()) break;
          pc[r] = end;
          progress = true;
        }
      }
    }
    for (int r = 0; r < s_.ranks; ++r)
      if (pc[r] < s_.actions[r].size()) error(r, pc[r], "deadlock with batched send/recv: " + unmatched(r, pc[r]));
  }

  void finish(ValidationReport* rep) {
    rep->errors = std::move(errors_);
    rep->ok = rep->errors.empty();
    if (static_cast<int>(s_.actions.size()) == s_.ranks) {
      rep->peak_activations = peak_activations(s_);
      for (int p : rep->peak_activations) rep->max_peak_activations = std::max(rep->max_peak_activations, p);
    }
  }

  const Schedule& s_;
  std::vector<std::string> errors_;
  std::vector<int> f_pos_, b_pos_;  // [unit] index of its forward / input backward in its rank's list
  std::vector<int> src_, dst_;      // [message] ranks of a needed cross-rank message, -1 if none
};

}  // namespace

ValidationReport validate(const Schedule& schedule) {
  ValidationReport rep;
  Checker(schedule).run(&rep);
  return rep;
}

std::string ValidationReport::summary() const {
  if (ok) return "ok";
  std::string out;
  for (const std::string& e : errors) out += e + "\n";
  return out;
}

}  // namespace ts::parallel
