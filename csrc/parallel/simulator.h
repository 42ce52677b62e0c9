// Timing model for pipeline schedules, and the bubble formulas of the DualPipe README.
//
// Timing model. Every rank starts at time 0 and walks its list. A compute starts when the
// rank is free and its inputs are ready: a local input when its producer ended, a remote
// one p2p after the producer rank posted the SEND. SEND and RECV take no rank time (isend
// and irecv; the copy engine or NIC moves the data), so they never delay the rank.
//
// Bubble. busy[r] is the sum of rank r's compute costs, bubble[r] = total - busy[r], and
// critical_bubble = max over ranks: the rank that idles most. This reproduces the
// README's table exactly for integer costs, under the preconditions below.
//
// The README's B is the FULL backward. Costs::B here is the backward for inputs only,
// so README-B = Costs::B + Costs::W; a 1F1B BW action costs B + W, and FB is a forward
// overlapped with a full backward (what DualPipe's steady state overlaps). In these terms:
//   1F1B       (PP-1)(F+B+W)          README (PP-1)(F+B)
//   ZB1P       (PP-1)(F+B-W)          README (PP-1)(F+B-2W)
//   DualPipe   (PP/2-1)(FB+B-2W)      README (PP/2-1)(F&B+B-3W)
//   DualPipeV  same, PP = 2*ranks stages on ranks devices
// Preconditions under which simulate() hits these exactly (tested by random sweeps):
//   all:       p2p = 0
//   1F1B:      any positive costs, any M >= 1
//   ZB1P:      W <= F, W <= B, M >= PP
//   DualPipe(V): W <= B <= F, max(F, B+W) <= FB <= F+B+W, M as make_schedule requires,
//              and F = B (a forward costs as much as a backward for inputs). Without
//              F = B the schedule's bubble is
//              (PP/2-1)(FB+F-2W), closed_form_bubble(): the middle ranks idle (PP/2-1)F
//              waiting for their first input, (PP/2-1)(FB-B-W) in the cool-down and
//              (PP/2-1)(B-W) at the end.
#pragma once

#include <string>
#include <vector>

#include "csrc/parallel/schedule.h"

namespace ts::parallel {

struct Costs {
  double F = 1;     // forward of one unit (one micro-batch on one stage)
  double B = 1;     // backward for inputs of one unit (README-B minus W)
  double W = 1;     // backward for weights of one unit
  double FB = 3;    // forward of one unit overlapped with the full backward (B+W) of another
  double p2p = 0;   // from posting a SEND until the receiver can use the data
  double post = 0;  // rank time to post one SEND or RECV (a CPU transport copies and wakes threads)
};

// Rank time an action takes: BW = B + W; SEND and RECV take `post` (0 by default).
double cost_of(OpKind op, const Costs& c);

struct Span {
  double start = 0;
  double end = 0;
};

struct Timeline {
  std::vector<std::vector<Span>> spans;  // [R][action], parallel to Schedule::actions
  double total = 0;                      // step time: end of the last compute
  std::vector<double> busy;              // [R] sum of compute costs
  std::vector<double> bubble;            // [R] total - busy[r]
  double critical_bubble = 0;            // max over ranks of bubble
  std::vector<int> peak_activations;     // [R], as in ValidationReport
};

// Throws std::invalid_argument if the schedule fails validate() or a cost is negative or
// not finite.
Timeline simulate(const Schedule& schedule, const Costs& costs);

// The README's bubble for `kind` with `ranks` devices (PP = ranks, or 2*ranks stages for
// DualPipeV), in Costs' terms (table above).
double formula_bubble(ScheduleKind kind, int ranks, const Costs& costs);
// This project's schedules' bubble under the wider closed-form preconditions: equal to
// formula_bubble except DualPipe(V), where it is (PP/2-1)(FB+F-2W).
double closed_form_bubble(ScheduleKind kind, int ranks, const Costs& costs);

// "" when the preconditions above hold, i.e. when simulate() of make_schedule(kind, ranks,
// microbatches) equals formula_bubble (resp. closed_form_bubble) exactly, as the random
// sweeps in tests/schedules check; otherwise the violated conditions, "; "-joined.
std::string formula_preconditions(ScheduleKind kind, int ranks, int microbatches, const Costs& costs);
std::string closed_form_preconditions(ScheduleKind kind, int ranks, int microbatches, const Costs& costs);

}  // namespace ts::parallel
