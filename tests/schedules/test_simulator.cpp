// Simulator: exact README bubbles over random integer costs, precondition tightness,
// an independent check of every timeline against the dependency rules, and latency.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "csrc/parallel/simulate_cores.h"
#include "csrc/parallel/simulator.h"

namespace ts::parallel {
namespace {

constexpr ScheduleKind kKinds[] = {ScheduleKind::k1F1B, ScheduleKind::kZB1P, ScheduleKind::kDualPipe,
                                   ScheduleKind::kDualPipeV};

bool is_dual(ScheduleKind k) { return k == ScheduleKind::kDualPipe || k == ScheduleKind::kDualPipeV; }

// Devices for PP stages, and micro-batch counts meeting the formula's preconditions.
int devices(ScheduleKind k, int pp) { return k == ScheduleKind::kDualPipeV ? pp / 2 : pp; }
std::vector<int> formula_microbatches(ScheduleKind k, int pp) {
  switch (k) {
    case ScheduleKind::k1F1B:
      return {1, pp - 1, pp, pp + 1, 2 * pp, 3 * pp + 1};
    case ScheduleKind::kZB1P:
      return {pp, pp + 1, 2 * pp, 3 * pp + 1};
    case ScheduleKind::kDualPipe:
      return {2 * pp, 2 * pp + 2, 3 * pp, 4 * pp};
    case ScheduleKind::kDualPipeV:
      return {pp, pp + 1, 2 * pp - 1, 3 * pp};
  }
  return {};
}

class CostDraw {
 public:
  explicit CostDraw(unsigned seed) : rng_(seed) {}
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  // Integer costs satisfying formula_preconditions (same_fb: DualPipe's F == B).
  Costs draw(ScheduleKind k, bool readme_formula) {
    Costs c;
    c.F = uniform(1, 30);
    c.B = uniform(1, 30);
    if (is_dual(k)) c.B = readme_formula ? c.F : uniform(1, static_cast<int>(c.F));
    const double w_max = k == ScheduleKind::k1F1B ? 30 : std::min(c.F, c.B);
    c.W = uniform(1, static_cast<int>(w_max));
    c.FB = uniform(static_cast<int>(std::max(c.F, c.B + c.W)), static_cast<int>(c.F + c.B + c.W));
    return c;
  }

 private:
  std::mt19937 rng_;
};

std::string costs_text(const Costs& c) {
  return "F=" + std::to_string(c.F) + " B=" + std::to_string(c.B) + " W=" + std::to_string(c.W) +
         " FB=" + std::to_string(c.FB) + " p2p=" + std::to_string(c.p2p);
}

// Checks a timeline against the rules directly, without the simulator's bookkeeping:
// each action lasts its cost (a SEND or RECV `post`), a rank runs one thing at a time in list
// order, and every input is ready (remote inputs p2p after the producer's SEND was posted, i.e.
// after its posting ends) before it starts.
void expect_consistent(const Schedule& s, const Timeline& tl, const Costs& c) {
  std::vector<double> f_end(s.microbatches * s.stages, -1), b_end(f_end), sent_act(f_end), sent_grad(f_end);
  auto id = [&](const Unit& u) { return u.mb * s.stages + u.stage; };
  for (int r = 0; r < s.ranks; ++r) {
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (const Unit* f = a.forward_unit()) f_end[id(*f)] = tl.spans[r][i].end;
      if (const Unit* b = a.input_backward_unit()) b_end[id(*b)] = tl.spans[r][i].end;
      if (a.op == OpKind::kSend)
        (a.payload == Payload::kActivation ? sent_act : sent_grad)[id(a.unit)] = tl.spans[r][i].end;
    }
  }
  double total = 0;
  for (int r = 0; r < s.ranks; ++r) {
    double prev_end = 0, busy = 0;
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      const Span& sp = tl.spans[r][i];
      ASSERT_GE(sp.start, prev_end) << "rank " << r << " #" << i;
      prev_end = sp.end;
      if (!a.is_compute()) {
        ASSERT_EQ(sp.end - sp.start, c.post) << describe(a);
        continue;
      }
      ASSERT_EQ(sp.end - sp.start, cost_of(a.op, c)) << describe(a);
      busy += sp.end - sp.start;
      total = std::max(total, sp.end);
      auto ready = [&](const Unit& u, bool backward) {  // when (u's F or B) output is usable here
        const bool local = s.rank_of(u) == r;
        if (!backward) return local ? f_end[id(u)] : sent_act[id(u)] + c.p2p;
        return local ? b_end[id(u)] : sent_grad[id(u)] + c.p2p;
      };
      if (const Unit* f = a.forward_unit(); f && f->stage > 0) {
        EXPECT_GE(sp.start, ready(s.unit(f->mb, f->stage - 1), false)) << describe(a);
      }
      if (const Unit* b = a.input_backward_unit()) {
        EXPECT_GE(sp.start, f_end[id(*b)]) << describe(a);
        if (b->stage + 1 < s.stages) {
          EXPECT_GE(sp.start, ready(s.unit(b->mb, b->stage + 1), true)) << describe(a);
        }
      }
      if (a.op == OpKind::kW) {
        EXPECT_GE(sp.start, b_end[id(a.unit)]) << describe(a);
      }
    }
    EXPECT_EQ(tl.busy[r], busy);
    EXPECT_EQ(tl.bubble[r], tl.total - busy);
  }
  EXPECT_EQ(tl.total, total);
  EXPECT_EQ(tl.critical_bubble, *std::max_element(tl.bubble.begin(), tl.bubble.end()));
}

// The README's table, exactly: random positive integer costs meeting the preconditions,
// PP in {4, 6, 8}, several micro-batch counts per schedule.
TEST(SimulatorTest, BubbleEqualsReadmeFormulaExactly) {
  CostDraw rng(20240601);
  for (ScheduleKind kind : kKinds) {
    for (int pp : {4, 6, 8}) {
      for (int mbs : formula_microbatches(kind, pp)) {
        const Schedule s = make_schedule(kind, devices(kind, pp), mbs);
        for (int draw = 0; draw < 12; ++draw) {
          const Costs c = rng.draw(kind, /*readme_formula=*/true);
          SCOPED_TRACE(std::string(schedule_kind_name(kind)) + " pp=" + std::to_string(pp) +
                       " mbs=" + std::to_string(mbs) + " " + costs_text(c));
          ASSERT_EQ(formula_preconditions(kind, s.ranks, mbs, c), "");
          const Timeline tl = simulate(s, c);
          EXPECT_EQ(tl.critical_bubble, formula_bubble(kind, s.ranks, c));
          if (!is_dual(kind)) {  // every rank of 1F1B and ZB1P idles the same
            for (double b : tl.bubble) EXPECT_EQ(b, tl.critical_bubble);
          }
          expect_consistent(s, tl, c);
        }
      }
    }
  }
}

// DualPipe(V) without F == B: the schedules' own closed form (PP/2-1)(FB+F-2W).
TEST(SimulatorTest, DualPipeBubbleEqualsClosedFormWhenBackwardIsCheaper) {
  CostDraw rng(7);
  for (ScheduleKind kind : {ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV}) {
    for (int pp : {2, 4, 6, 8, 10}) {
      for (int mbs : formula_microbatches(kind, pp)) {
        const Schedule s = make_schedule(kind, devices(kind, pp), mbs);
        for (int draw = 0; draw < 10; ++draw) {
          const Costs c = rng.draw(kind, /*readme_formula=*/false);
          SCOPED_TRACE(std::string(schedule_kind_name(kind)) + " pp=" + std::to_string(pp) +
                       " mbs=" + std::to_string(mbs) + " " + costs_text(c));
          ASSERT_EQ(closed_form_preconditions(kind, s.ranks, mbs, c), "");
          EXPECT_EQ(simulate(s, c).critical_bubble, closed_form_bubble(kind, s.ranks, c));
          if (c.F == c.B) {
            EXPECT_EQ(closed_form_bubble(kind, s.ranks, c), formula_bubble(kind, s.ranks, c));
          }
        }
      }
    }
  }
}

// The README's own examples: 8 ranks / 20 micro-batches and DualPipeV 4 ranks / 10.
TEST(SimulatorTest, ReadmeExamples) {
  const Costs c{.F = 4, .B = 4, .W = 2, .FB = 9};
  const Timeline dp = simulate(make_schedule(ScheduleKind::kDualPipe, 8, 20), c);
  const Timeline dv = simulate(make_schedule(ScheduleKind::kDualPipeV, 4, 10), c);
  EXPECT_EQ(dp.critical_bubble, 3 * (9 + 6 - 6));  // (PP/2-1)(F&B + B_full - 3W), B_full = 6
  EXPECT_EQ(dv.critical_bubble, 3 * (9 + 6 - 6));
  EXPECT_EQ(dp.total, dv.total);  // DualPipeV is DualPipe folded: each rank pair on one device
  EXPECT_EQ(*std::max_element(dp.peak_activations.begin(), dp.peak_activations.end()), 9);
}

// Each precondition is needed: just outside it the bubble differs from the closed form,
// and formula_preconditions names what is violated.
TEST(SimulatorTest, PreconditionsAreTight) {
  struct Case {
    ScheduleKind kind;
    int ranks, mbs;
    Costs c;
    const char* violated;
  };
  auto costs = [](double F, double B, double W, double FB) { return Costs{.F = F, .B = B, .W = W, .FB = FB}; };
  const Case cases[] = {
      {ScheduleKind::kZB1P, 4, 9, costs(1, 2, 2, 3), "W <= F and W <= B"},
      {ScheduleKind::kZB1P, 4, 12, costs(2, 1, 2, 3), "W <= F and W <= B"},
      {ScheduleKind::kZB1P, 4, 3, costs(3, 2, 1, 5), "microbatches >= PP"},
      {ScheduleKind::kDualPipe, 4, 16, costs(1, 3, 2, 6), "W <= B <= F"},
      {ScheduleKind::kDualPipe, 8, 30, costs(2, 1, 2, 4), "W <= B <= F"},
      {ScheduleKind::kDualPipe, 4, 14, costs(2, 1, 1, 1), "max(F, B+W) <= FB <= F+B+W"},
      {ScheduleKind::kDualPipe, 6, 18, costs(2, 1, 1, 6), "max(F, B+W) <= FB <= F+B+W"},
      {ScheduleKind::kDualPipeV, 3, 9, costs(2, 1, 1, 6), "max(F, B+W) <= FB <= F+B+W"},
  };
  for (const Case& t : cases) {
    SCOPED_TRACE(std::string(schedule_kind_name(t.kind)) + " ranks=" + std::to_string(t.ranks) +
                 " mbs=" + std::to_string(t.mbs) + " " + costs_text(t.c));
    EXPECT_NE(simulate(make_schedule(t.kind, t.ranks, t.mbs), t.c).critical_bubble,
              closed_form_bubble(t.kind, t.ranks, t.c));
    EXPECT_NE(closed_form_preconditions(t.kind, t.ranks, t.mbs, t.c).find(t.violated), std::string::npos)
        << closed_form_preconditions(t.kind, t.ranks, t.mbs, t.c);
  }
  Costs unequal = costs(3, 2, 1, 5);
  EXPECT_NE(formula_preconditions(ScheduleKind::kDualPipe, 4, 8, unequal).find("F == B"), std::string::npos);
  EXPECT_EQ(closed_form_preconditions(ScheduleKind::kDualPipe, 4, 8, unequal), "");
  unequal.p2p = 1;
  EXPECT_NE(formula_preconditions(ScheduleKind::k1F1B, 4, 8, unequal).find("p2p == 0"), std::string::npos);
  EXPECT_NE(formula_preconditions(ScheduleKind::kDualPipe, 4, 6, unequal).find("at least 2*ranks"), std::string::npos);
}

// Latency: one micro-batch through 1F1B crosses 2(R-1) links on its critical path;
// every timeline still obeys the rules, and the step never gets shorter.
TEST(SimulatorTest, PointToPointLatency) {
  const Costs c{.F = 3, .B = 4, .W = 2, .FB = 7, .p2p = 5};
  for (int ranks : {1, 2, 4, 7}) {
    const Timeline tl = simulate(make_schedule(ScheduleKind::k1F1B, ranks, 1), c);
    EXPECT_EQ(tl.total, ranks * (c.F + c.B + c.W) + 2 * (ranks - 1) * c.p2p);
  }
  CostDraw rng(99);
  for (ScheduleKind kind : kKinds) {
    const Schedule s = make_schedule(kind, 4, 8);
    for (int draw = 0; draw < 5; ++draw) {
      Costs lat = rng.draw(kind, false);
      const double base = simulate(s, lat).total;
      lat.p2p = rng.uniform(1, 10);
      const Timeline tl = simulate(s, lat);
      EXPECT_GT(tl.total, base);
      expect_consistent(s, tl, lat);
    }
  }
}

// Posting cost: one micro-batch through 1F1B waits for 3(R-1) postings on its critical path:
// going forward, each sender first posts its RECV of the gradient (the placement rule lists a
// rank's RECVs before its SENDs, schedule_messages.cpp) and then the SEND of the activation;
// going back, each hop's SEND. With several micro-batches the timelines still obey the rules,
// the step never gets shorter, and the shared-core simulation with a core per rank agrees.
TEST(SimulatorTest, PostingCost) {
  const Costs c{.F = 3, .B = 4, .W = 2, .FB = 7, .p2p = 0, .post = 0.5};
  for (int ranks : {1, 2, 4, 7}) {
    const Timeline tl = simulate(make_schedule(ScheduleKind::k1F1B, ranks, 1), c);
    EXPECT_EQ(tl.total, ranks * (c.F + c.B + c.W) + 3 * (ranks - 1) * c.post);
  }
  CostDraw rng(7);
  for (ScheduleKind kind : kKinds) {
    const Schedule s = make_schedule(kind, 4, 8);
    for (int draw = 0; draw < 5; ++draw) {
      Costs k = rng.draw(kind, false);
      const double base = simulate(s, k).total;
      k.post = rng.uniform(0.1, 2);
      const Timeline tl = simulate(s, k);
      EXPECT_GE(tl.total, base);
      expect_consistent(s, tl, k);
      EXPECT_NEAR(simulate_shared_cores(s, k, s.ranks).total, tl.total, 1e-9) << schedule_kind_name(kind);
    }
  }
  Costs bad = c;
  bad.post = -1;
  EXPECT_THROW(simulate(make_schedule(ScheduleKind::k1F1B, 2, 2), bad), std::invalid_argument);
}

TEST(SimulatorTest, RejectsBadInput) {
  Schedule s = make_schedule(ScheduleKind::kZB1P, 3, 6);
  Costs bad;
  bad.W = -1;
  EXPECT_THROW(simulate(s, bad), std::invalid_argument);
  s.actions[1].pop_back();  // drop a W: no longer a valid schedule
  try {
    simulate(s, Costs{});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("weight backward runs 0 times"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ts::parallel
