// Helpers shared by the schedule generators, the validator and the simulator. Not part of
// the public API: the dependency rules of schedule.h written once as code.
#pragma once

#include <vector>

#include "csrc/parallel/schedule.h"

namespace ts::parallel::detail {

// Dense ids: unit (m, s) -> m*S + s; message (payload, producer unit) -> (p*M + m)*S + s.
inline int unit_id(const Schedule& s, const Unit& u) { return u.mb * s.stages + u.stage; }
inline int unit_count(const Schedule& s) { return s.microbatches * s.stages; }
inline int message_id(const Schedule& s, Payload p, const Unit& u) {
  return (static_cast<int>(p) * s.microbatches + u.mb) * s.stages + u.stage;
}
inline int message_count(const Schedule& s) { return 2 * unit_count(s); }

// One input a compute action waits for: the forward (kF) or input-backward (kB) of `unit`
// having run. `from_rank` is where that happens; when it is another rank the input
// arrives as the message (kF -> activation, kB -> gradient) produced by `unit`.
struct Need {
  enum What { kF, kB } what;
  Unit unit;
  int from_rank;
};
// Appends the inputs of compute action `a` on `rank` to `out` (W's need is kB of its unit).
void needs(const Schedule& s, int rank, const Action& a, std::vector<Need>* out);

// A cross-rank message produced by a compute action.
struct Message {
  Payload payload;
  Unit producer;
  int dst;
};
// Appends the cross-rank messages compute action `a` on `rank` produces, activation first.
void outgoing(const Schedule& s, int rank, const Action& a, std::vector<Message>* out);

inline Payload payload_of(Need::What w) { return w == Need::kF ? Payload::kActivation : Payload::kGradient; }

// Compute-only per-rank orders (no SEND/RECV yet) for each schedule kind; `shape` carries
// kind, ranks, stages and microbatches. Defined in schedule_generators.cpp.
std::vector<std::vector<Action>> order_1f1b(const Schedule& shape);
std::vector<std::vector<Action>> order_zb1p(const Schedule& shape);
std::vector<std::vector<Action>> order_dual(const Schedule& shape);  // DualPipe and DualPipeV

// Adds SEND/RECV actions to a compute-only schedule so that it is deadlock-free under the
// conservative semantics of schedule.h. Defined in schedule_messages.cpp.
void insert_messages(Schedule* s);

}  // namespace ts::parallel::detail
