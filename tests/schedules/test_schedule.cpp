// Schedules as data: names, argument checks, placement, exactly-once, README table columns.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>

#include "csrc/parallel/schedule.h"

namespace ts::parallel {
namespace {

constexpr ScheduleKind kKinds[] = {ScheduleKind::k1F1B, ScheduleKind::kZB1P, ScheduleKind::kDualPipe,
                                   ScheduleKind::kDualPipeV};

// Valid micro-batch counts for `kind` on `ranks` devices, smallest first.
std::vector<int> microbatch_counts(ScheduleKind kind, int ranks) {
  switch (kind) {
    case ScheduleKind::kDualPipe:
      return {2 * ranks, 2 * ranks + 2, 3 * ranks + (3 * ranks) % 2, 4 * ranks};
    case ScheduleKind::kDualPipeV:
      return {2 * ranks, 2 * ranks + 1, 3 * ranks, 4 * ranks + 3};
    default:
      return {1, ranks - 1 > 0 ? ranks - 1 : 1, ranks, ranks + 1, 2 * ranks, 3 * ranks + 1};
  }
}

TEST(ScheduleKindTest, ParsesEveryNameCaseInsensitively) {
  EXPECT_EQ(parse_schedule_kind("1f1b"), ScheduleKind::k1F1B);
  EXPECT_EQ(parse_schedule_kind("ZB1P"), ScheduleKind::kZB1P);
  EXPECT_EQ(parse_schedule_kind("DualPipe"), ScheduleKind::kDualPipe);
  EXPECT_EQ(parse_schedule_kind("dualpipev"), ScheduleKind::kDualPipeV);
  for (ScheduleKind k : kKinds) EXPECT_EQ(parse_schedule_kind(schedule_kind_name(k)), k);
}

TEST(ScheduleKindTest, UnknownNameListsTheValidOnes) {
  try {
    parse_schedule_kind("gpipe");
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'gpipe'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1f1b, zb1p, dualpipe, dualpipev"), std::string::npos) << msg;
  }
}

void expect_rejected(ScheduleKind kind, int ranks, int mbs, const std::string& phrase) {
  try {
    make_schedule(kind, ranks, mbs);
    ADD_FAILURE() << "accepted " << schedule_kind_name(kind) << " ranks=" << ranks << " mbs=" << mbs;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
  }
}

TEST(MakeScheduleTest, RejectsInvalidCombinationsWithAReason) {
  expect_rejected(ScheduleKind::kDualPipe, 5, 20, "even number of ranks");
  expect_rejected(ScheduleKind::kDualPipe, 4, 9, "even number of micro-batches");
  expect_rejected(ScheduleKind::kDualPipe, 4, 6, "at least 2*ranks");
  expect_rejected(ScheduleKind::kDualPipeV, 4, 7, "at least 2*ranks");
  expect_rejected(ScheduleKind::k1F1B, 0, 4, "ranks must be >= 1");
  expect_rejected(ScheduleKind::kZB1P, 4, 0, "microbatches must be >= 1");
}

// Every valid combination validates (messages, order, no deadlock), and independently of
// the validator each unit's F, B and W run exactly once, on the rank placement names.
TEST(MakeScheduleTest, EveryValidScheduleValidatesAndRunsEachPassOnce) {
  for (ScheduleKind kind : kKinds) {
    for (int ranks = 1; ranks <= 8; ++ranks) {
      if (kind == ScheduleKind::kDualPipe && ranks % 2) continue;
      for (int mbs : microbatch_counts(kind, ranks)) {
        SCOPED_TRACE(std::string(schedule_kind_name(kind)) + " ranks=" + std::to_string(ranks) +
                     " mbs=" + std::to_string(mbs));
        const Schedule s = make_schedule(kind, ranks, mbs);
        const ValidationReport rep = validate(s);
        ASSERT_TRUE(rep.ok) << rep.summary();
        std::map<std::tuple<int, int, char>, int> count;  // (mb, stage, pass) -> runs
        for (int r = 0; r < ranks; ++r) {
          for (const Action& a : s.actions[r]) {
            if (!a.is_compute()) continue;
            const Unit& b = a.op == OpKind::kFB ? a.bwd : a.unit;
            switch (a.op) {
              case OpKind::kF:
                ++count[{a.unit.mb, a.unit.stage, 'F'}];
                break;
              case OpKind::kB:
                ++count[{b.mb, b.stage, 'B'}];
                break;
              case OpKind::kW:
                ++count[{b.mb, b.stage, 'W'}];
                break;
              case OpKind::kFB:
                ++count[{a.unit.mb, a.unit.stage, 'F'}];
                [[fallthrough]];
              case OpKind::kBW:
                ++count[{b.mb, b.stage, 'B'}];
                ++count[{b.mb, b.stage, 'W'}];
                break;
              default:
                break;
            }
            EXPECT_EQ(s.rank_of(a.unit), r);
          }
        }
        EXPECT_EQ(count.size(), 3u * mbs * s.stages);
        for (const auto& [key, n] : count) EXPECT_EQ(n, 1);
      }
    }
  }
}

TEST(MakeScheduleTest, PlacementMatchesEachDesign) {
  const Schedule dp = make_schedule(ScheduleKind::kDualPipe, 8, 20);
  const Schedule dv = make_schedule(ScheduleKind::kDualPipeV, 4, 10);
  for (int r = 0; r < 8; ++r) {
    std::set<int> held;
    for (const Action& a : dp.actions[r])
      if (a.is_compute()) held.insert(a.unit.stage);
    EXPECT_EQ(held, (std::set<int>{r, 7 - r})) << "rank " << r;
  }
  for (int r = 0; r < 4; ++r) {
    std::set<int> held;
    for (const Action& a : dv.actions[r])
      if (a.is_compute()) held.insert(a.unit.stage);
    EXPECT_EQ(held, (std::set<int>{r, 7 - r})) << "rank " << r;
  }
  // Direction 1 (micro-batches 10..19) enters at rank 7, direction 0 at rank 0.
  EXPECT_EQ(dp.rank_of(dp.unit(10, 0)), 7);
  EXPECT_EQ(dp.unit(10, 0).dir, 1);
  EXPECT_EQ(dp.rank_of(dp.unit(9, 0)), 0);
  // DualPipeV: the loss stage 7 is on rank 0, the turn (stages 3 and 4) on rank 3.
  EXPECT_EQ(dv.rank_of(dv.unit(0, 7)), 0);
  EXPECT_EQ(dv.rank_of(dv.unit(0, 3)), 3);
  EXPECT_EQ(dv.rank_of(dv.unit(0, 4)), 3);
}

// The README's table: params per device (1x,1x,2x,2x), activations per device
// (PP,PP,PP+1,PP+1) and devices (PP,PP,PP,PP/2), computed from the schedules.
TEST(TableTest, ComputedColumnsMatchTheReadme) {
  for (ScheduleKind kind : kKinds) {
    for (int pp : {2, 4, 6, 8}) {
      const int devices = kind == ScheduleKind::kDualPipeV ? pp / 2 : pp;
      for (int mbs : microbatch_counts(kind, devices)) {
        if (mbs < pp) continue;  // the table assumes enough micro-batches to fill the pipe
        const Schedule s = make_schedule(kind, devices, mbs);
        EXPECT_EQ(s.stages, pp);
        EXPECT_EQ(table_row(s), readme_table_row(kind, pp))
            << schedule_kind_name(kind) << " pp=" << pp << " mbs=" << mbs;
      }
    }
  }
  EXPECT_EQ(readme_table_row(ScheduleKind::kDualPipeV, 8), (TableRow{2, 9, 4}));
  EXPECT_EQ(readme_table_row(ScheduleKind::k1F1B, 8), (TableRow{1, 8, 8}));
}

// ZB1P defers W's but never holds more than 1F1B's rank 0; 1F1B's rank r holds R-r.
TEST(TableTest, PerRankPeaks) {
  const std::vector<int> one_f_one_b = peak_activations(make_schedule(ScheduleKind::k1F1B, 6, 12));
  const std::vector<int> zb = peak_activations(make_schedule(ScheduleKind::kZB1P, 6, 12));
  EXPECT_EQ(one_f_one_b, (std::vector<int>{6, 5, 4, 3, 2, 1}));
  EXPECT_EQ(zb, (std::vector<int>{6, 6, 6, 6, 6, 6}));
  EXPECT_EQ(peak_activations(make_schedule(ScheduleKind::kDualPipe, 6, 12)), std::vector<int>(6, 7));
}

TEST(ScheduleTest, MessageTagsAreUniquePerStep) {
  const Schedule s = make_schedule(ScheduleKind::kDualPipe, 4, 8);
  std::set<int> tags;
  size_t sends = 0;
  for (const auto& list : s.actions)
    for (const Action& a : list)
      if (a.op == OpKind::kSend) ++sends, tags.insert(message_tag(s, a.payload, a.unit));
  EXPECT_EQ(tags.size(), sends);
}

}  // namespace
}  // namespace ts::parallel
