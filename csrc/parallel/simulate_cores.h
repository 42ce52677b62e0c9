// The simulator's timing model (simulator.h) on a machine where the ranks share fewer cores
// than there are ranks, e.g. 4 pipeline ranks on a 2-core CPU.
//
// Processor sharing: while k ranks are computing, each progresses at min(1, cores/k) of its
// own speed (the fair share an OS scheduler gives single-threaded processes), so a compute
// of cost c takes c wall time alone and longer when more than `cores` ranks compute at once.
// Everything else is simulate()'s model: a compute starts when its rank is free and its
// inputs are there (remote ones p2p after the SEND is posted); SEND and RECV take no time.
// With cores >= ranks this is exactly simulate().
#pragma once

#include "csrc/parallel/schedule.h"
#include "csrc/parallel/simulator.h"

namespace ts::parallel {

// Throws std::invalid_argument for an invalid schedule, bad costs or cores <= 0. The
// Timeline's busy[r] is the wall time rank r spends inside computes (stretched by sharing).
// `bw` is the cost of a fused full backward (BW) when it differs from B + W, as it does for
// an executor whose split backward has overheads the fused one avoids; < 0 means B + W.
Timeline simulate_shared_cores(const Schedule& schedule, const Costs& costs, double cores, double bw = -1);

}  // namespace ts::parallel
