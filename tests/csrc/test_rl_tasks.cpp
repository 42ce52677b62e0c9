// Tasks with verifiable rewards (csrc/rl/tasks.h): every worked solution scores full marks, the
// reward functions on a table of hand-written completions (right, wrong, malformed, adversarial),
// the countdown parser, and disjoint train and held-out problem sets.
#include <gtest/gtest.h>

#include <set>

#include "csrc/rl/tasks.h"

namespace {

using ts::rl::Level;
using ts::rl::Split;

ts::config::TaskConfig arithmetic(const std::string& ops = "+-*") {
  ts::config::TaskConfig c;
  c.name = "arithmetic";
  c.ops = ops;
  c.digits_min = 1;
  c.digits_max = 4;
  return c;
}

ts::config::TaskConfig countdown() {
  ts::config::TaskConfig c;
  c.name = "countdown";
  c.numbers = 4;
  c.corpus_numbers = 3;
  return c;
}

ts::rl::Problem arith_problem(int64_t a, char op, int64_t b, int64_t result) {
  ts::rl::Problem p;
  p.prompt = "Compute " + std::to_string(a) + op + std::to_string(b) + ".\n";
  p.target = result;
  p.numbers = {a, b};
  return p;
}

}  // namespace

TEST(RlTasks, WorkedSolutionsScoreFullMarks) {
  for (const auto& cfg : {arithmetic(), countdown()}) {
    const ts::rl::Task task(cfg);
    for (auto level : {Level::kCorpus, Level::kRl})
      for (auto split : {Split::kTrain, Split::kHeldout})
        for (const auto& p : task.problems(split, level, 0, 300)) {
          SCOPED_TRACE(p.prompt + p.solution);
          EXPECT_EQ(ts::rl::format_reward(p.solution), 1.0);
          EXPECT_EQ(ts::rl::accuracy_reward(cfg, p, p.solution), 1.0);
          EXPECT_TRUE(ts::rl::correct(cfg, p, p.solution));
          EXPECT_EQ(task.heldout(p.prompt), split == Split::kHeldout);
        }
  }
}

TEST(RlTasks, ArithmeticStepsAndAnswers) {
  const auto cfg = arithmetic();
  const ts::rl::Task task(cfg);
  int seen = 0;
  for (const auto& p : task.problems(Split::kTrain, Level::kRl, 0, 2000)) {
    const auto a = p.numbers[0], b = p.numbers[1];
    const char op = p.prompt[8 + std::to_string(a).size()];
    const int64_t want = op == '+' ? a + b : op == '-' ? a - b : a * b;
    ASSERT_EQ(p.target, want) << p.prompt;
    if (op == '-') {
      EXPECT_GE(a, b) << p.prompt;
    }
    ++seen;
  }
  EXPECT_EQ(seen, 2000);
  // The digit-by-digit steps of one known case.
  ts::config::TaskConfig add = arithmetic("+");
  add.digits_min = add.digits_max = 3;
  bool found = false;
  for (const auto& p : ts::rl::Task(add).problems(Split::kTrain, Level::kRl, 0, 50)) {
    ASSERT_EQ(p.solution.rfind("<think>", 0), 0u);
    const auto think = p.solution.substr(7, p.solution.find("</think>") - 7);
    // Three steps "x+y+c=s", the carries chaining.
    int64_t carry = 0, steps = 0;
    for (size_t at = 0; at < think.size();) {
      const size_t end = std::min(think.find(' ', at), think.size());
      const std::string step = think.substr(at, end - at);
      const int64_t x = step[0] - '0', y = step[2] - '0', c = step[4] - '0', s = std::stoll(step.substr(6));
      EXPECT_EQ(c, carry) << think;
      EXPECT_EQ(s, x + y + c) << think;
      carry = s / 10;
      ++steps;
      at = end + 1;
    }
    EXPECT_EQ(steps, 3) << think;
    found = true;
  }
  EXPECT_TRUE(found);
}

TEST(RlTasks, TrainAndHeldoutAreDisjoint) {
  for (const auto& cfg : {arithmetic(), countdown()}) {
    const ts::rl::Task task(cfg);
    std::set<std::string> heldout;
    for (const auto& p : task.problems(Split::kHeldout, Level::kRl, 0, 500)) heldout.insert(p.prompt);
    for (auto level : {Level::kCorpus, Level::kRl})
      for (const auto& p : task.problems(Split::kTrain, level, 0, 3000))
        EXPECT_EQ(heldout.count(p.prompt), 0u) << p.prompt;
    // The corpus is made of train problems only.
    const std::string corpus = task.corpus(Split::kTrain, 20000);
    EXPECT_EQ(corpus.size(), 20000u);
    for (const auto& q : heldout) EXPECT_EQ(corpus.find(q), std::string::npos) << q;
  }
}

TEST(RlTasks, Deterministic) {
  const ts::rl::Task a(countdown()), b(countdown());
  for (int64_t i = 0; i < 50; ++i)
    EXPECT_EQ(a.problem(Split::kTrain, Level::kRl, i).prompt, b.problem(Split::kTrain, Level::kRl, i).prompt);
  auto other = countdown();
  other.seed = 2;
  int differ = 0;
  const ts::rl::Task c(other);
  for (int64_t i = 0; i < 50; ++i)
    differ += a.problem(Split::kTrain, Level::kRl, i).prompt != c.problem(Split::kTrain, Level::kRl, i).prompt;
  EXPECT_GT(differ, 40);
}

TEST(RlTasks, FormatReward) {
  struct Case {
    const char* text;
    double want;
  };
  const Case cases[] = {
      {"<think>a</think><answer>1</answer>", 1},
      {"  <think></think>\n<answer>1</answer>\n", 1},
      {"<think>a</think> x <answer>1</answer>", 0},   // text between the blocks
      {"<answer>1</answer><think>a</think>", 0},      // out of order
      {"<think>a<answer>1</answer></think>", 0},      // nested
      {"<think>a</think><answer>1</answer>tail", 0},  // text after
      {"<think>a</think><think>b</think><answer>1</answer>", 0},
      {"<think>a</think><answer>1", 0},  // unclosed
      {"<answer>1</answer>", 0},
      {"", 0},
      {"</answer></think><answer><think>", 0},
      {"\xff\xfe<think>\x01</think><answer>\x80</answer>", 0},
  };
  for (const auto& c : cases) EXPECT_EQ(ts::rl::format_reward(c.text), c.want) << c.text;
}

TEST(RlTasks, ArithmeticAccuracy) {
  const auto cfg = arithmetic();
  const auto p = arith_problem(347, '+', 285, 632);
  struct Case {
    std::string text;
    double want;
  };
  const Case cases[] = {
      {"<think>7+5+0=12</think><answer>632</answer>", 1},
      {"<answer> 632 </answer>", 1},                   // accuracy ignores the format
      {"<answer>1</answer> <answer>632</answer>", 1},  // the last answer counts
      {"<answer>632</answer> <answer>1</answer>", 0},
      {"<think>x</think><answer>633</answer>", 0},
      {"<think>x</think><answer>0632x</answer>", 0},
      {"<think>x</think><answer>99999999999999999999999999</answer>", 0},  // huge
      {"<think>x</think><answer>-632</answer>", 0},
      {"<think>x</think><answer></answer>", 0},
      {"<think>632</think>", 0},  // no answer tag
      {"", 0},
      {"<answer>632", 0},
  };
  for (const auto& c : cases) EXPECT_EQ(ts::rl::accuracy_reward(cfg, p, c.text), c.want) << c.text;
  const auto neg = arith_problem(3, '-', 5, -2);
  EXPECT_EQ(ts::rl::accuracy_reward(cfg, neg, "<answer>-2</answer>"), 1);
}

TEST(RlTasks, CountdownRewardAsTinyZero) {
  const auto cfg = countdown();
  ts::rl::Problem p;
  p.numbers = {3, 5, 4};
  p.target = 32;
  struct Case {
    std::string text;
    double want;
  };
  const Case cases[] = {
      {"<think>3+5=8 8*4=32</think><answer>(3+5)*4</answer>", 1},
      {"<answer>4*(5+3)</answer>", 1},
      {"<answer> ( 3 + 5 ) * 4 </answer>", 1},
      {"<answer>(3+5)*4+0</answer>", 0.1},  // a number not given
      {"<answer>(3+5)*5</answer>", 0.1},    // 5 used twice, 4 never
      {"<answer>3+5+4</answer>", 0.1},      // wrong value
      {"<answer>(3+5)*4/0</answer>", 0.1},  // division by zero
      {"<answer>((3+5)*4</answer>", 0.1},   // unbalanced parentheses
      {"<answer>import os</answer>", 0.1},
      {"<answer></answer>", 0.1},
      {"<answer>99999999999999999999*3*5*4</answer>", 0.1},
      {"<think>(3+5)*4</think>", 0},  // no answer tag
      {"", 0},
  };
  for (const auto& c : cases) EXPECT_DOUBLE_EQ(ts::rl::accuracy_reward(cfg, p, c.text), c.want) << c.text;
}

TEST(RlTasks, CountdownParser) {
  using ts::rl::evaluate_countdown;
  using ts::rl::Rational;
  EXPECT_EQ(evaluate_countdown("(3+5)*4", {3, 4, 5}), (Rational{32, 1}));
  EXPECT_EQ(evaluate_countdown("3/4+5", {3, 4, 5}), (Rational{23, 4}));
  EXPECT_EQ(evaluate_countdown("3-4-5", {3, 4, 5}), (Rational{-6, 1}));  // left-associative
  EXPECT_EQ(evaluate_countdown("60/(5-3)/3", {60, 5, 3, 3}), (Rational{10, 1}));
  for (const char* bad : {"", "3+", "+3+4+5", "-3+4+5", "3 4 5", "3+4+5)", "(3+4+5", "3+4+5=12", "3**4+5", "3.0+4+5",
                          "3+4+x5", "3+4+5;", "(3+4)(5)", "3/(4-4)+5", "3+4", "3+4+5+5"})
    EXPECT_FALSE(evaluate_countdown(bad, {3, 4, 5}).has_value()) << bad;
  // Deep nesting and huge values fail cleanly.
  std::string deep(1000, '(');
  deep += "3+4+5" + std::string(1000, ')');
  EXPECT_FALSE(evaluate_countdown(deep, {3, 4, 5}).has_value());
  EXPECT_FALSE(evaluate_countdown("999999999999999*999999999999999", {999999999999999, 999999999999999}).has_value());
}

TEST(RlTasks, BadConfigs) {
  auto c = arithmetic();
  c.ops = "+/";
  EXPECT_THROW(ts::rl::Task{c}, ts::config::ConfigError);
  c = arithmetic();
  c.digits_min = 5;
  EXPECT_THROW(ts::rl::Task{c}, ts::config::ConfigError);
}
