// Compute orders (no communication yet) for 1F1B, ZB1P, DualPipe and DualPipeV.
// schedule_messages.cpp adds the SEND/RECV actions afterwards.
#include <algorithm>
#include <deque>
#include <stdexcept>

#include "csrc/parallel/schedule_internal.h"

namespace ts::parallel::detail {
namespace {

Action compute(OpKind op, const Unit& u) {
  Action a;
  a.op = op;
  a.unit = u;
  return a;
}

}  // namespace

// 1F1B: rank r runs R-1-r warm-up forwards, then alternates one forward with one full
// backward (B and W fused), then drains the remaining backwards. Rank 0 thus holds R
// micro-batches at its peak.
std::vector<std::vector<Action>> order_1f1b(const Schedule& s) {
  const int R = s.ranks, M = s.microbatches;
  std::vector<std::vector<Action>> out(R);
  for (int r = 0; r < R; ++r) {
    int nf = 0;
    for (; nf < std::min(R - 1 - r, M); ++nf) out[r].push_back(compute(OpKind::kF, s.unit(nf, r)));
    for (int nb = 0; nb < M; ++nb) {
      if (nf < M) out[r].push_back(compute(OpKind::kF, s.unit(nf++, r)));
      out[r].push_back(compute(OpKind::kBW, s.unit(nb, r)));
    }
  }
  return out;
}

// ZB1P (zero-bubble H1, Qi et al. 2023): 1F1B's forward order with the backward split.
// The input gradient leaves after B alone, so the backward chain costs B (not B+W) per
// hop, and rank r keeps up to r weight-gradient passes pending, running the oldest W once
// more than r are queued and the rest at the end, where they fill the cool-down bubbles.
// A pending W keeps its activation, so rank r peaks at (R-r) + r = R micro-batches: the
// same peak as 1F1B's rank 0.
std::vector<std::vector<Action>> order_zb1p(const Schedule& s) {
  const int R = s.ranks, M = s.microbatches;
  std::vector<std::vector<Action>> out(R);
  for (int r = 0; r < R; ++r) {
    int nf = 0, nw = 0;
    for (; nf < std::min(R - 1 - r, M); ++nf) out[r].push_back(compute(OpKind::kF, s.unit(nf, r)));
    for (int nb = 0; nb < M; ++nb) {
      if (nf < M) out[r].push_back(compute(OpKind::kF, s.unit(nf++, r)));
      out[r].push_back(compute(OpKind::kB, s.unit(nb, r)));
      if (nb + 1 - nw > r) out[r].push_back(compute(OpKind::kW, s.unit(nw++, r)));
    }
    for (; nw < M; ++nw) out[r].push_back(compute(OpKind::kW, s.unit(nw, r)));
  }
  return out;
}

namespace {

// One step of a DualPipe rank's program in terms of its two chunks. Chunk 0 is the stage
// its own side's micro-batches meet first (going away from the nearest pipeline end),
// chunk 1 the stage they meet on the way back (DualPipeV) or the other direction's stage
// (DualPipe). W takes the oldest deferred weight gradient (FIFO).
struct ChunkOp {
  OpKind op;
  int fchunk = -1;  // F, FB
  int bchunk = -1;  // B, BW, FB
};

// The program of a rank at distance h from the nearest pipeline end, with H = R/2 rank
// pairs (DualPipe) or H = R ranks (DualPipeV) and N micro-batches per chunk. Phases:
//   1. 2(H-h-1) x F0           ranks nearer the ends bank extra chunk-0 forwards
//   2. (h+1) x F0 F1           chunk-1 inputs start arriving; alternate
//   3. (H-h-1) x B1 W F1       first backwards; the W fills the wait for the next F1
//   4. (N-2H+h+1) x FB(F0,B1) FB(F1,B0)   steady state, every step overlapped; the
//      middle ranks (h = H-1) split their first FB into F0 then BW1 so the activation
//      leaves one backward earlier
//   5. (H-h-1) x BW1 FB(F1,B0) chunk-0 forwards are done
//   6. (h+1) x B1 B0           the first h+1 of these backwards are full (BW), the rest
//                              defer their W
//   7. (H-h-1) x W B0          deferred W's fill the wait for chunk-0 gradients
//   8. (h+1) x W               flush
// Each chunk sees N forwards and N backwards; phases 6-8 defer and run h+1 W's.
std::vector<ChunkOp> dual_program(int H, int N, int h) {
  std::vector<ChunkOp> p;
  auto F = [&](int c) { p.push_back({OpKind::kF, c, -1}); };
  auto B = [&](int c, bool full) { p.push_back({full ? OpKind::kBW : OpKind::kB, -1, c}); };
  auto FB = [&](int fc, int bc) { p.push_back({OpKind::kFB, fc, bc}); };
  auto W = [&] { p.push_back({OpKind::kW, -1, -1}); };
  for (int i = 0; i < 2 * (H - h - 1); ++i) F(0);
  for (int i = 0; i <= h; ++i) {
    F(0);
    F(1);
  }
  for (int i = 0; i < H - h - 1; ++i) {
    B(1, false);
    W();
    F(1);
  }
  for (int i = 0; i < N - 2 * H + h + 1; ++i) {
    if (i == 0 && h == H - 1) {
      F(0);
      B(1, true);
    } else {
      FB(0, 1);
    }
    FB(1, 0);
  }
  for (int i = 0; i < H - h - 1; ++i) {
    B(1, true);
    FB(1, 0);
  }
  int full_left = h + 1;
  for (int i = 0; i <= h; ++i) {
    for (int c : {1, 0}) {
      B(c, full_left > 0);
      --full_left;
    }
  }
  for (int i = 0; i < H - h - 1; ++i) {
    W();
    B(0, false);
  }
  for (int i = 0; i <= h; ++i) W();
  return p;
}

}  // namespace

std::vector<std::vector<Action>> order_dual(const Schedule& s) {
  const bool v = s.kind == ScheduleKind::kDualPipeV;
  if (!v && s.kind != ScheduleKind::kDualPipe) throw std::logic_error("order_dual: not a DualPipe kind");
  const int R = s.ranks;
  const int H = v ? R : R / 2;                            // ranks between an end and the middle
  const int N = v ? s.microbatches : s.microbatches / 2;  // micro-batches per chunk
  std::vector<std::vector<Action>> out(R);
  for (int r = 0; r < R; ++r) {
    const int h = v ? r : std::min(r, R - 1 - r);
    const bool second_half = !v && r >= H;
    // Chunk c's i-th micro-batch as a unit. DualPipe: the second half of the ranks is the
    // mirror image, so its chunk 0 serves direction 1.
    auto unit_of = [&](int c, int i) {
      if (v) return s.unit(i, c == 0 ? r : 2 * R - 1 - r);
      const int dir = c ^ static_cast<int>(second_half);
      return s.unit(i + dir * N, dir == 0 ? r : R - 1 - r);
    };
    int nf[2] = {0, 0}, nb[2] = {0, 0};
    std::deque<Unit> deferred;
    for (const ChunkOp& op : dual_program(H, N, h)) {
      Action a;
      a.op = op.op;
      if (op.op == OpKind::kW) {
        a.unit = deferred.front();
        deferred.pop_front();
      } else {
        if (op.fchunk >= 0) a.unit = unit_of(op.fchunk, nf[op.fchunk]++);
        if (op.bchunk >= 0) {
          Unit b = unit_of(op.bchunk, nb[op.bchunk]++);
          if (op.op == OpKind::kFB) {
            a.bwd = b;
          } else {
            a.unit = b;
          }
          if (op.op == OpKind::kB) deferred.push_back(b);
        }
      }
      out[r].push_back(a);
    }
    if (!deferred.empty() || nf[0] != N || nf[1] != N || nb[0] != N || nb[1] != N)
      throw std::logic_error("order_dual: program does not cover every micro-batch once");
  }
  return out;
}

}  // namespace ts::parallel::detail
