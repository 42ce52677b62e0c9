// validate(): every class of broken schedule is caught and named; the conservative
// blocking model catches the classic 1F1B send/send deadlock.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "csrc/parallel/schedule.h"

namespace ts::parallel {
namespace {

bool has_error(const ValidationReport& rep, const std::string& phrase) {
  for (const std::string& e : rep.errors)
    if (e.find(phrase) != std::string::npos) return true;
  return false;
}

#define EXPECT_REPORTS(schedule, phrase)                                                           \
  do {                                                                                             \
    const ValidationReport rep_ = validate(schedule);                                              \
    EXPECT_FALSE(rep_.ok);                                                                         \
    EXPECT_TRUE(has_error(rep_, phrase)) << "wanted '" << (phrase) << "' in:\n" << rep_.summary(); \
  } while (0)

size_t find_index(const std::vector<Action>& list, OpKind op, size_t from = 0) {
  for (size_t i = from; i < list.size(); ++i)
    if (list[i].op == op) return i;
  ADD_FAILURE() << "no " << op_kind_name(op) << " after #" << from;
  return 0;
}

// Where a compute with this forward unit (or input-backward unit) sits in `list`.
size_t consumer_index(const std::vector<Action>& list, const Action& recv) {
  const Unit want{recv.unit.mb, recv.unit.stage + (recv.payload == Payload::kActivation ? 1 : -1), recv.unit.dir};
  for (size_t i = 0; i < list.size(); ++i) {
    const Unit* u = recv.payload == Payload::kActivation ? list[i].forward_unit() : list[i].input_backward_unit();
    if (u && *u == want) return i;
  }
  ADD_FAILURE() << "no consumer for " << describe(recv);
  return 0;
}

TEST(ValidateTest, GeneratedSchedulesPass) {
  for (const char* name : {"1f1b", "zb1p", "dualpipe", "dualpipev"}) {
    const ValidationReport rep = validate(make_schedule(parse_schedule_kind(name), 4, 16));
    EXPECT_TRUE(rep.ok) << name << "\n" << rep.summary();
    EXPECT_EQ(rep.summary(), "ok");
  }
}

// Posting each RECV right before its consumer deadlocks 1F1B when sends block: rank r
// sends an activation to r+1 while r+1 sends a gradient to r, both before their RECVs.
TEST(ValidateTest, RecvJustBeforeConsumerDeadlocksWithBlockingSends) {
  Schedule s = make_schedule(ScheduleKind::k1F1B, 4, 8);
  for (auto& list : s.actions) {
    std::vector<Action> recvs, rest;
    for (const Action& a : list) (a.op == OpKind::kRecv ? recvs : rest).push_back(a);
    for (const Action& r : recvs) rest.insert(rest.begin() + consumer_index(rest, r), r);
    list = rest;
  }
  EXPECT_REPORTS(s, "deadlock: blocked because rank");
}

// Posting every RECV at the start is safe when RECVs are individual irecvs, but not when
// each run of communication is one batch waited on as a whole: the first batch would need
// every SEND of the step.
TEST(ValidateTest, AllRecvsUpFrontOnlySafePerOperation) {
  Schedule s = make_schedule(ScheduleKind::kDualPipe, 4, 8);
  for (auto& list : s.actions)
    std::stable_partition(list.begin(), list.end(), [](const Action& a) { return a.op == OpKind::kRecv; });
  const ValidationReport rep = validate(s);
  EXPECT_FALSE(has_error(rep, "deadlock: blocked")) << rep.summary();
  EXPECT_TRUE(has_error(rep, "deadlock with batched send/recv")) << rep.summary();
}

TEST(ValidateTest, MissingRecv) {
  Schedule s = make_schedule(ScheduleKind::k1F1B, 3, 4);
  s.actions[1].erase(s.actions[1].begin() + find_index(s.actions[1], OpKind::kRecv));
  EXPECT_REPORTS(s, "missing RECV of activation (mb=0,s=0) r0->r1");
}

TEST(ValidateTest, MissingSend) {
  Schedule s = make_schedule(ScheduleKind::kDualPipeV, 2, 4);
  s.actions[0].erase(s.actions[0].begin() + find_index(s.actions[0], OpKind::kSend));
  EXPECT_REPORTS(s, "missing SEND");
}

TEST(ValidateTest, DuplicateForward) {
  Schedule s = make_schedule(ScheduleKind::k1F1B, 2, 3);
  s.actions[0].push_back(s.actions[0][find_index(s.actions[0], OpKind::kF)]);
  EXPECT_REPORTS(s, "unit (mb=0,s=0): forward runs 2 times");
}

TEST(ValidateTest, MissingWeightPass) {
  Schedule s = make_schedule(ScheduleKind::kZB1P, 3, 5);
  s.actions[2].erase(s.actions[2].begin() + find_index(s.actions[2], OpKind::kW));
  EXPECT_REPORTS(s, "weight backward runs 0 times");
}

TEST(ValidateTest, BackwardBeforeItsForward) {
  Schedule s = make_schedule(ScheduleKind::k1F1B, 2, 2);
  auto& last = s.actions[1];  // F0 then BW0 on the last stage; swap them
  std::swap(last[find_index(last, OpKind::kF)], last[find_index(last, OpKind::kBW)]);
  EXPECT_REPORTS(s, "needs F(mb=0,s=1), which this rank runs later");
}

TEST(ValidateTest, SendBeforeItsProducer) {
  Schedule s = make_schedule(ScheduleKind::k1F1B, 2, 2);
  auto& first = s.actions[0];
  const size_t send = find_index(first, OpKind::kSend);
  const Action a = first[send];
  first.erase(first.begin() + send);
  first.insert(first.begin(), a);
  EXPECT_REPORTS(s, "sent before its producer runs");
}

TEST(ValidateTest, RecvAfterItsConsumer) {
  Schedule s = make_schedule(ScheduleKind::k1F1B, 2, 2);
  auto& last = s.actions[1];
  const size_t recv = find_index(last, OpKind::kRecv);
  const Action a = last[recv];
  last.erase(last.begin() + recv);
  last.push_back(a);
  EXPECT_REPORTS(s, "posted after its consumer");
}

// DualPipe's F&B sends an activation and a gradient to the same neighbour back to back;
// swapping the two RECVs breaks order-matched (tagless) channels.
TEST(ValidateTest, ChannelOrderMismatch) {
  Schedule s = make_schedule(ScheduleKind::kDualPipe, 4, 8);
  bool swapped = false;
  for (auto& list : s.actions)
    for (size_t i = 0; !swapped && i + 1 < list.size(); ++i)
      if (list[i].op == OpKind::kRecv && list[i + 1].op == OpKind::kRecv && list[i].peer == list[i + 1].peer) {
        std::swap(list[i], list[i + 1]);
        swapped = true;
      }
  ASSERT_TRUE(swapped);
  EXPECT_REPORTS(s, "SEND and RECV orders differ");
}

TEST(ValidateTest, UnitOnTheWrongRank) {
  Schedule s = make_schedule(ScheduleKind::k1F1B, 3, 3);
  s.actions[0][find_index(s.actions[0], OpKind::kF)].unit.stage = 2;
  EXPECT_REPORTS(s, "unit placed on rank 2, not here");
}

TEST(ValidateTest, UnneededMessage) {
  Schedule s = make_schedule(ScheduleKind::kDualPipeV, 2, 4);
  Action extra;  // stage 1 -> 2 stays on rank 1 in DualPipeV: nobody receives this
  extra.op = OpKind::kSend;
  extra.unit = s.unit(0, 1);
  extra.peer = 0;
  s.actions[1].push_back(extra);
  EXPECT_REPORTS(s, "no compute on the peer needs this message");
}

TEST(ValidateTest, WrongDirectionAndShape) {
  Schedule s = make_schedule(ScheduleKind::kDualPipe, 2, 4);
  s.actions[0][find_index(s.actions[0], OpKind::kF)].unit.dir = 1;
  EXPECT_REPORTS(s, "micro-batch, stage or direction out of range");
  s = make_schedule(ScheduleKind::kDualPipeV, 2, 4);
  s.stages = 2;
  EXPECT_REPORTS(s, "bad shape");
}

}  // namespace
}  // namespace ts::parallel
