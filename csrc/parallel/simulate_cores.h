// The simulator's timing model (simulator.h) on a machine where the ranks share fewer cores
// than there are ranks, e.g. 4 pipeline ranks on a 2-core CPU.
//
// Processor sharing: while k ranks are computing, each progresses at min(1, cores/k) of its
// own speed (the fair share an OS scheduler gives single-threaded processes), so a compute
// of cost c takes c wall time alone and longer when more than `cores` ranks compute at once.
// Everything else is simulate()'s model: a compute starts when its rank is free and its
// inputs are there (remote ones p2p after the SEND is posted); posting a SEND or RECV is
// Costs::post of its rank's work, sharing the cores like a compute. With cores >= ranks this is
// exactly simulate().
//
// Moving a message can take CPU too: a CPU transport (Gloo over TCP) copies every message
// through the kernel on threads of both processes. With message_cpu > 0 each message is a job
// of that much work from its SEND's posting on, sharing the cores like a compute, and the
// receiver can use it p2p after the job is done.
#pragma once

#include "csrc/parallel/schedule.h"
#include "csrc/parallel/simulator.h"

namespace ts::parallel {

// Throws std::invalid_argument for an invalid schedule, bad costs, cores <= 0 or message_cpu < 0. The
// Timeline's busy[r] is the wall time rank r spends inside computes (stretched by sharing).
// `bw` is the cost of a fused full backward (BW) when it differs from B + W, as it does for
// an executor whose split backward has overheads the fused one avoids; < 0 means B + W.
Timeline simulate_shared_cores(const Schedule& schedule, const Costs& costs, double cores, double bw = -1,
                               double message_cpu = 0);

}  // namespace ts::parallel
