// Tasks with verifiable rewards, for R1-Zero-style reinforcement learning (kind: grpo) and for the
// base model's corpus (data.source: task).
//
//   arithmetic   "Compute 347+285.\n" -> <think>7+5+0=12 4+8+1=13 3+2+1=6</think><answer>632</answer>
//                multi-digit + - * (a - b with a >= b); the worked steps go digit by digit from the
//                right (a borrow shows as a leading 1: "14-8-0=6"), products as partial products.
//   countdown    "Use 3 5 4 to make 32.\n" -> <think>3+5=8 8*4=32</think><answer>(3+5)*4</answer>
//                TinyZero's task: an expression that uses each given number exactly once.
//
// The completion template is "<think>...</think><answer>...</answer>": the prompt is the question
// line; generation stops after "</answer>". Problems come from a stream seeded by task.seed; each
// problem belongs to the train or the held-out set by a hash of its prompt, so the two sets are
// disjoint whatever the difficulty, and the corpus and RL never see a held-out problem.
//
// Rewards are rules on the completion text and never throw: garbage, unbalanced tags, huge
// numbers, division by zero and empty completions all score.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "csrc/config/config.h"

namespace ts::rl {

inline constexpr const char* kStopString = "</answer>";

enum class Split { kTrain, kHeldout };
enum class Level { kCorpus, kRl };  // the corpus's easier instances, or RL's and evaluation's

struct Problem {
  std::string prompt;            // the question line, newline included
  std::string solution;          // a worked completion in the template (think and answer)
  std::string answer;            // arithmetic: the result as text; countdown: the solution's expression
  int64_t target = 0;            // arithmetic: the result; countdown: the target
  std::vector<int64_t> numbers;  // countdown: the numbers (in prompt order); arithmetic: the operands
};

class Task {
 public:
  explicit Task(const config::TaskConfig& cfg);  // validates (check_task_config)

  // Problem `index` of a split at a level: deterministic in (task.seed, split, level, index).
  Problem problem(Split split, Level level, int64_t index) const;
  // The first n problems of a split (RL steps draw from kTrain by index, evaluation uses kHeldout).
  std::vector<Problem> problems(Split split, Level level, int64_t first, int64_t n) const;
  // Whether a prompt belongs to the held-out set.
  bool heldout(const std::string& prompt) const;

  // The worked-example corpus: problems of `split` at Level::kCorpus (task.corpus_rl_percent of
  // them at Level::kRl), one per line, `bytes` long.
  std::string corpus(Split split, int64_t bytes) const;

  const config::TaskConfig& config() const { return cfg_; }

 private:
  Problem make(uint64_t seed, Level level) const;
  config::TaskConfig cfg_;
};

// Throws config::InvalidKeys for contradictory task settings (digit ranges, operators, numbers).
void check_task_config(const config::TaskConfig& cfg);

// The parts of a completion under the template.
struct Parsed {
  bool well_formed = false;           // exactly "<think>T</think><answer>A</answer>" up to whitespace
  std::optional<std::string> answer;  // the text inside the last <answer>...</answer>, if any
};
Parsed parse_completion(const std::string& completion);

// Reward functions: format is 1 for a well-formed completion, else 0. accuracy: arithmetic 1 when
// the answer is the result, else 0; countdown as TinyZero: 0 without an answer, 0.1 for an answer
// that is wrong, malformed or misuses the numbers, 1 for a correct one.
double format_reward(const std::string& completion);
double accuracy_reward(const config::TaskConfig& cfg, const Problem& p, const std::string& completion);
// Whether the completion solves the problem (accuracy 1).
bool correct(const config::TaskConfig& cfg, const Problem& p, const std::string& completion);

// Countdown's checker: the value of `expr` when it is an expression of integers, + - * / and
// parentheses whose integers are exactly the multiset `numbers`, evaluated exactly (rationals);
// nullopt otherwise (syntax, other numbers, division by zero, magnitudes past 1e15).
struct Rational {
  int64_t num = 0, den = 1;  // den > 0, reduced
  bool operator==(const Rational&) const = default;
};
std::optional<Rational> evaluate_countdown(const std::string& expr, const std::vector<int64_t>& numbers);
// A 64-bit seed from several values (a splitmix64 mix): problem streams and sampling seeds.
uint64_t mix_seed(std::initializer_list<uint64_t> values);

// An arithmetic answer: optional spaces, an optional '-', 1 to 18 digits, optional spaces.
std::optional<int64_t> parse_integer(const std::string& text);

}  // namespace ts::rl
