// Pipeline-parallel schedules as data: 1F1B, ZB1P (zero-bubble H1), DualPipe and DualPipeV.
//
// A Schedule is, per rank, the ordered list of actions that rank executes. Compute actions
// name a "unit": one micro-batch on one pipeline stage. Communication is explicit (SEND/RECV
// actions), so an executor walks its rank's list and does exactly what it says.
//
// Names used throughout (fixed once here):
//   R  ranks (devices)           S  stages of the model (S = R, or 2R for DualPipeV)
//   M  micro-batches in a step   PP the README's "PP": S for every schedule here
// Micro-batches have global ids 0..M-1. In DualPipe the first M/2 enter at rank 0
// (direction 0) and the last M/2 enter at rank R-1 (direction 1); every micro-batch visits
// stages 0..S-1 in order, so dependencies read the same for all schedules:
//   F(m,s)   needs F(m,s-1)                     (its input activation)
//   B(m,s)   needs F(m,s) and B(m,s+1)          (its output gradient; the last stage's B
//                                                starts from the loss F(m,S-1) produced)
//   W(m,s)   needs B(m,s)
//
// Placement (rank_of): 1F1B/ZB1P stage s on rank s. DualPipe: direction 0 runs stage s on
// rank s, direction 1 on rank R-1-s, so rank r holds stages r and R-1-r (2x parameters).
// DualPipeV: stage s on rank s for s < R and on rank 2R-1-s after, so rank r holds stages r
// and 2R-1-r and micro-batches go down to rank R-1 and back up to rank 0, whose stage 2R-1
// computes the loss.
//
// Executing a schedule. Each rank walks its list:
//   RECV     post a receive for one message; the compute that consumes it waits for it.
//   SEND     post a send of a message the rank produced earlier in its list.
//   compute  run once its inputs are there.
// validate() checks the lists are deadlock-free under each of two conservative models, so an
// executor may use whichever its backend suits:
//   per operation  RECV is an irecv that never blocks; a SEND may block until the peer has
//                  posted the matching RECV (a blocking send, or an isend waited at once);
//                  a compute blocks until every remote input's SEND was posted. (Gloo.)
//   batched        each maximal run of SEND/RECVs between two computes is posted as one
//                  batch_isend_irecv and waited on entirely before the next compute.
//                  (NCCL executors, where p2p to one peer shares a stream; DualPipe's way.)
// A RECV must never be a blocking recv posted alone: the lists post RECVs ahead of the
// rank's own SENDs on purpose. Every (src, dst) channel carries its messages in the same
// order on both sides, so matching by order (NCCL, no tags) and by tag (message_tag) agree.
// A message is named by its payload and the unit that produced it: the activation of
// F(m,s) goes to F(m,s+1)'s rank, the input gradient of B(m,s) goes to B(m,s-1)'s rank.
// DualPipeV's turn from stage R-1 to R stays on rank R-1 and needs no message.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ts::parallel {

enum class ScheduleKind { k1F1B, kZB1P, kDualPipe, kDualPipeV };

// "1f1b" | "zb1p" | "dualpipe" | "dualpipev" (case-insensitive). Throws std::invalid_argument
// naming the input and listing the valid names.
ScheduleKind parse_schedule_kind(std::string_view name);
std::string_view schedule_kind_name(ScheduleKind kind);  // the lower-case name parse accepts

enum class OpKind : std::uint8_t {
  kF,     // forward of one unit
  kB,     // backward for inputs of one unit (its W runs later as its own action)
  kW,     // backward for weights of one unit
  kFB,    // forward of `unit` overlapped with the full backward (B and W) of `bwd`
  kBW,    // full backward of one unit: B then W fused (1F1B, DualPipe's non-deferred B)
  kSend,  // post a send of message (payload, unit) to `peer`
  kRecv,  // post a receive of message (payload, unit) from `peer`
};
std::string_view op_kind_name(OpKind op);  // "F", "B", "W", "FB", "BW", "SEND", "RECV"

enum class Payload : std::uint8_t { kActivation, kGradient };

struct Unit {
  int mb = -1;     // micro-batch, 0..M-1
  int stage = -1;  // 0..S-1
  int dir = 0;     // 0: entered at rank 0; 1: entered at rank R-1 (DualPipe only)
  friend bool operator==(const Unit&, const Unit&) = default;
};

struct Action {
  OpKind op = OpKind::kF;
  Unit unit;                               // F/B/W/BW: the unit computed; FB: the forward half; SEND/RECV: the
                                           // unit that produced the message
  Unit bwd;                                // FB only: the unit whose full backward runs overlapped
  int peer = -1;                           // SEND/RECV only: the other rank
  Payload payload = Payload::kActivation;  // SEND/RECV only
  friend bool operator==(const Action&, const Action&) = default;

  bool is_compute() const { return op != OpKind::kSend && op != OpKind::kRecv; }
  // The unit whose forward this action runs, or nullptr.
  const Unit* forward_unit() const;
  // The unit whose input gradient this action produces (B, BW, FB's backward), or nullptr.
  const Unit* input_backward_unit() const;
  // The unit whose weight gradient this action completes (W, BW, FB's backward), or nullptr.
  const Unit* weight_backward_unit() const;
};

// "F(mb=3,s=2)", "FB(F mb=3 s=2 | BW mb=1 s=5)", "SEND act(mb=3,s=2)->r3", ...
std::string describe(const Action& action);

struct Schedule {
  ScheduleKind kind = ScheduleKind::k1F1B;
  int ranks = 0;                             // R
  int stages = 0;                            // S
  int microbatches = 0;                      // M
  std::vector<std::vector<Action>> actions;  // [R][program order]

  int direction_of(int mb) const;  // 0 or 1 (1 only for DualPipe's second half)
  int rank_of(const Unit& u) const;
  Unit unit(int mb, int stage) const { return Unit{mb, stage, direction_of(mb)}; }
};

// Throws std::invalid_argument for invalid combinations, saying what is required:
// ranks >= 1 and microbatches >= 1 always; DualPipe: ranks even, microbatches even and
// >= 2*ranks; DualPipeV: microbatches >= 2*ranks (its S = 2*ranks stages).
Schedule make_schedule(ScheduleKind kind, int ranks, int microbatches);

// A tag unique within one step for the message (payload, unit), for tag-matching backends.
int message_tag(const Schedule& s, Payload payload, const Unit& producer);

struct ValidationReport {
  bool ok = false;
  std::vector<std::string> errors;  // empty iff ok; each names the rank and action index
  // Peak live activations per rank, in units of one micro-batch on one stage. A unit's
  // activation is live from the start of its F until the action that completes its weight
  // gradient (W, BW, or FB's backward) ends: W needs the stage's stored inputs, so a
  // deferred W keeps them. With this definition 1F1B and ZB1P peak at PP and DualPipe(V)
  // at PP+1, the README's table.
  std::vector<int> peak_activations;  // [R]
  int max_peak_activations = 0;
  std::string summary() const;  // "ok" or the errors, one per line
};

// Checks: field ranges and placement; each unit's F, B and W exactly once; local order
// (inputs produced earlier on the same rank); one SEND after the producer and one RECV
// before the consumer for every cross-rank dependency and no others; equal message order
// on both ends of every channel; and no deadlock under either execution model above (a
// fixpoint over the ranks' program counters; blocking only ever waits on other ranks'
// progress, which never goes back, so reaching the end once means under any timing).
ValidationReport validate(const Schedule& schedule);

// Peak live activations per rank (definition above); needs only the compute order.
std::vector<int> peak_activations(const Schedule& schedule);

// The README's table columns computed from a schedule: parameters per device in units of
// one stage (1/PP of the model), activations per device (max peak), devices (ranks).
struct TableRow {
  int params_per_device = 0;
  int activations_per_device = 0;
  int devices = 0;
  friend bool operator==(const TableRow&, const TableRow&) = default;
};
TableRow table_row(const Schedule& schedule);
// The README's row for `kind` at PP pipeline stages: (1,PP,PP) (1,PP,PP) (2,PP+1,PP) (2,PP+1,PP/2).
TableRow readme_table_row(ScheduleKind kind, int pp);

}  // namespace ts::parallel
