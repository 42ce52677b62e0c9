#include "csrc/rl/tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace ts::rl {

namespace {

uint64_t mix(std::initializer_list<uint64_t> xs) {
  uint64_t h = 0x243F6A8885A308D3ull;
  for (uint64_t x : xs) {
    h ^= x + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    h ^= h >> 31;
  }
  return h;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// Inclusive. Not std::uniform_int_distribution, whose output differs between standard libraries:
// the problem streams are the same everywhere (the modulo bias is below 1e-15 for these ranges).
int64_t uniform(std::mt19937_64& r, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(r() % static_cast<uint64_t>(hi - lo + 1));
}

int64_t pow10(int64_t n) {
  int64_t p = 1;
  while (n-- > 0) p *= 10;
  return p;
}

int64_t with_digits(std::mt19937_64& r, int64_t digits) {
  return digits == 1 ? uniform(r, 0, 9) : uniform(r, pow10(digits - 1), pow10(digits) - 1);
}

std::vector<int64_t> digits_lsb_first(int64_t x) {
  std::vector<int64_t> d;
  do {
    d.push_back(x % 10);
    x /= 10;
  } while (x > 0);
  return d;
}

std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? " " : "") + parts[i];
  return s;
}

std::string addition_steps(int64_t a, int64_t b) {
  auto da = digits_lsb_first(a), db = digits_lsb_first(b);
  std::vector<std::string> steps;
  int64_t carry = 0;
  for (size_t i = 0; i < std::max(da.size(), db.size()); ++i) {
    const int64_t x = i < da.size() ? da[i] : 0, y = i < db.size() ? db[i] : 0, s = x + y + carry;
    steps.push_back(fmt::format("{}+{}+{}={}", x, y, carry, s));
    carry = s / 10;
  }
  return join(steps);
}

std::string subtraction_steps(int64_t a, int64_t b) {  // a >= b
  auto da = digits_lsb_first(a), db = digits_lsb_first(b);
  std::vector<std::string> steps;
  int64_t borrow = 0;
  for (size_t i = 0; i < da.size(); ++i) {
    const int64_t x = da[i], y = i < db.size() ? db[i] : 0, d = x - y - borrow;
    steps.push_back(d < 0 ? fmt::format("1{}-{}-{}={}", x, y, borrow, d + 10)
                          : fmt::format("{}-{}-{}={}", x, y, borrow, d));
    borrow = d < 0;
  }
  return join(steps);
}

std::string product_steps(int64_t a, int64_t b) {
  auto db = digits_lsb_first(b);
  std::vector<std::string> steps;
  std::vector<int64_t> partials;
  for (size_t i = 0; i < db.size(); ++i) {
    const int64_t place = pow10(static_cast<int64_t>(i));
    partials.push_back(a * db[i] * place);
    steps.push_back(fmt::format("{}*{}={}", a, db[i] * place, partials.back()));
  }
  if (partials.size() > 1) {
    std::string sum;
    for (size_t i = 0; i < partials.size(); ++i) {
      if (i) sum += '+';
      sum += std::to_string(partials[i]);
    }
    steps.push_back(sum + "=" + std::to_string(a * b));
  }
  return join(steps);
}

std::string completion(const std::string& think, const std::string& answer) {
  return "<think>" + think + "</think><answer>" + answer + "</answer>";
}

// Countdown's expression evaluator: recursive descent over integers, + - * / and parentheses.
class ExprParser {
 public:
  explicit ExprParser(const std::string& s) : s_(s) {}

  std::optional<Rational> parse(std::vector<int64_t>& literals) {
    literals_ = &literals;
    auto v = sum();
    skip();
    if (!v || pos_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  static constexpr int64_t kLimit = 1'000'000'000'000'000;  // 1e15: larger magnitudes fail
  static constexpr int kMaxDepth = 64;

  static std::optional<Rational> make(__int128 num, __int128 den) {
    if (den == 0) return std::nullopt;
    if (den < 0) num = -num, den = -den;
    __int128 a = num < 0 ? -num : num, b = den;
    while (b) a %= b, std::swap(a, b);
    if (a > 1) num /= a, den /= a;
    if (num > kLimit || num < -kLimit || den > kLimit) return std::nullopt;
    return Rational{static_cast<int64_t>(num), static_cast<int64_t>(den)};
  }
  static std::optional<Rational> apply(char op, const Rational& x, const Rational& y) {
    using I = __int128;
    switch (op) {
      case '+':
        return make(I(x.num) * y.den + I(y.num) * x.den, I(x.den) * y.den);
      case '-':
        return make(I(x.num) * y.den - I(y.num) * x.den, I(x.den) * y.den);
      case '*':
        return make(I(x.num) * y.num, I(x.den) * y.den);
      default:
        return make(I(x.num) * y.den, I(x.den) * y.num);  // '/': y == 0 -> den 0 -> nullopt
    }
  }
  void skip() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t')) ++pos_;
  }
  // A left-associative chain of operands joined by the operators in `ops`: sum() over products,
  // product() over atoms.
  template <class Operand>
  std::optional<Rational> chain(const char* ops, Operand operand) {
    auto v = operand();
    while (v) {
      skip();
      if (pos_ >= s_.size() || (s_[pos_] != ops[0] && s_[pos_] != ops[1])) break;
      const char op = s_[pos_++];
      auto r = operand();
      if (!r) return std::nullopt;
      v = apply(op, *v, *r);
    }
    return v;
  }
  std::optional<Rational> sum() {
    return chain("+-", [this] { return product(); });
  }
  std::optional<Rational> product() {
    return chain("*/", [this] { return atom(); });
  }
  std::optional<Rational> atom() {
    skip();
    if (pos_ >= s_.size()) return std::nullopt;
    if (s_[pos_] == '(') {
      if (++depth_ > kMaxDepth) return std::nullopt;
      ++pos_;
      auto v = sum();
      skip();
      if (!v || pos_ >= s_.size() || s_[pos_] != ')') return std::nullopt;
      ++pos_;
      --depth_;
      return v;
    }
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    if (pos_ == start || pos_ - start > 15) return std::nullopt;  // no number, or past 1e15
    const int64_t x = std::stoll(s_.substr(start, pos_ - start));
    literals_->push_back(x);
    return Rational{x, 1};
  }

  const std::string& s_;
  size_t pos_ = 0;
  int depth_ = 0;
  std::vector<int64_t>* literals_ = nullptr;
};

}  // namespace

uint64_t mix_seed(std::initializer_list<uint64_t> values) { return mix(values); }

void check_task_config(const config::TaskConfig& c) {
  if (c.digits_min > c.digits_max)
    throw config::InvalidKeys({"task.digits_min", "task.digits_max"},
                              fmt::format("must be <= task.digits_max ({}), got {}", c.digits_max, c.digits_min));
  if (c.corpus_digits_min > c.corpus_digits_max)
    throw config::InvalidKeys(
        {"task.corpus_digits_min", "task.corpus_digits_max"},
        fmt::format("must be <= task.corpus_digits_max ({}), got {}", c.corpus_digits_max, c.corpus_digits_min));
  if (c.name == "arithmetic") {
    if (c.ops.empty() || c.ops.find_first_not_of("+-*") != std::string::npos)
      throw config::InvalidKeys({"task.ops"}, fmt::format("expected one or more of '+', '-', '*', got '{}'", c.ops));
  }
  if (c.name == "countdown") {
    for (auto [key, n] : {std::pair{"task.numbers", c.numbers}, std::pair{"task.corpus_numbers", c.corpus_numbers}})
      if (n < 2 || n > 6) throw config::InvalidKeys({key}, fmt::format("expected 2 to 6 numbers, got {}", n));
  }
}

Task::Task(const config::TaskConfig& cfg) : cfg_(cfg) { check_task_config(cfg); }

bool Task::heldout(const std::string& prompt) const {
  return static_cast<int64_t>(mix({static_cast<uint64_t>(cfg_.seed), fnv1a(prompt)}) % 100) < cfg_.heldout_percent;
}

Problem Task::make(uint64_t seed, Level level) const {
  std::mt19937_64 r(seed);
  Problem p;
  if (cfg_.name == "arithmetic") {
    const bool corpus = level == Level::kCorpus;
    const int64_t lo = corpus ? cfg_.corpus_digits_min : cfg_.digits_min;
    const int64_t hi = corpus ? cfg_.corpus_digits_max : cfg_.digits_max;
    const char op = cfg_.ops[uniform(r, 0, static_cast<int64_t>(cfg_.ops.size()) - 1)];
    int64_t a = with_digits(r, uniform(r, lo, hi)), b = with_digits(r, uniform(r, lo, hi));
    if (op == '-' && a < b) std::swap(a, b);
    p.target = op == '+' ? a + b : op == '-' ? a - b : a * b;
    p.numbers = {a, b};
    p.prompt = fmt::format("Compute {}{}{}.\n", a, op, b);
    p.answer = std::to_string(p.target);
    const std::string steps = op == '+'   ? addition_steps(a, b)
                              : op == '-' ? subtraction_steps(a, b)
                                          : product_steps(a, b);
    p.solution = completion(cfg_.worked_steps ? steps : "", p.answer);
    return p;
  }
  // countdown: combine random pairs until one value is left; retry until it is a valid target.
  const int64_t n = level == Level::kCorpus ? cfg_.corpus_numbers : cfg_.numbers;
  for (;;) {
    struct Item {
      int64_t value;
      std::string expr;
      bool atom;
    };
    std::vector<Item> items;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t x = uniform(r, 1, cfg_.max_number);
      items.push_back({x, std::to_string(x), true});
      p.numbers.push_back(x);
    }
    std::vector<std::string> steps;
    while (items.size() > 1) {
      const auto i = static_cast<size_t>(uniform(r, 0, static_cast<int64_t>(items.size()) - 1));
      auto j = static_cast<size_t>(uniform(r, 0, static_cast<int64_t>(items.size()) - 2));
      if (j >= i) ++j;
      const Item x = items[i], y = items[j];
      std::vector<char> ops = {'+', '*'};
      if (x.value >= y.value) ops.push_back('-');
      if (y.value != 0 && x.value % y.value == 0) ops.push_back('/');
      const char op = ops[uniform(r, 0, static_cast<int64_t>(ops.size()) - 1)];
      const int64_t v = op == '+'   ? x.value + y.value
                        : op == '-' ? x.value - y.value
                        : op == '*' ? x.value * y.value
                                    : x.value / y.value;
      steps.push_back(fmt::format("{}{}{}={}", x.value, op, y.value, v));
      auto wrap = [](const Item& it) { return it.atom ? it.expr : "(" + it.expr + ")"; };
      Item z{v, wrap(x) + op + wrap(y), false};
      items.erase(items.begin() + static_cast<int64_t>(std::max(i, j)));
      items.erase(items.begin() + static_cast<int64_t>(std::min(i, j)));
      items.push_back(z);
    }
    if (items[0].value >= 1 && items[0].value <= cfg_.max_target) {
      p.target = items[0].value;
      p.answer = items[0].expr;
      std::string nums;
      for (size_t k = 0; k < p.numbers.size(); ++k) {
        if (k) nums += ' ';
        nums += std::to_string(p.numbers[k]);
      }
      p.prompt = fmt::format("Use {} to make {}.\n", nums, p.target);
      p.solution = completion(cfg_.worked_steps ? join(steps) : "", p.answer);
      return p;
    }
    p.numbers.clear();
  }
}

Problem Task::problem(Split split, Level level, int64_t index) const {
  for (uint64_t attempt = 0;; ++attempt) {
    Problem p = make(mix({static_cast<uint64_t>(cfg_.seed), static_cast<uint64_t>(level), static_cast<uint64_t>(split),
                          static_cast<uint64_t>(index), attempt}),
                     level);
    if (heldout(p.prompt) == (split == Split::kHeldout)) return p;
  }
}

std::vector<Problem> Task::problems(Split split, Level level, int64_t first, int64_t n) const {
  std::vector<Problem> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(problem(split, level, first + i));
  return out;
}

std::string Task::corpus(Split split, int64_t bytes) const {
  std::string out;
  out.reserve(static_cast<size_t>(bytes) + 256);
  for (int64_t i = 0; static_cast<int64_t>(out.size()) < bytes; ++i) {
    const bool hard = static_cast<int64_t>(mix({static_cast<uint64_t>(cfg_.seed), 0xC0DE, static_cast<uint64_t>(i)}) %
                                           100) < cfg_.corpus_rl_percent;
    const Problem p = problem(split, hard ? Level::kRl : Level::kCorpus, i);
    out += p.prompt + p.solution + "\n";
  }
  out.resize(static_cast<size_t>(bytes));
  return out;
}

Parsed parse_completion(const std::string& c) {
  Parsed p;
  // The answer: the last non-overlapping <answer>...</answer>, scanning from the left.
  const std::string open = "<answer>", close = kStopString;
  for (size_t at = c.find(open); at != std::string::npos;) {
    const size_t end = c.find(close, at + open.size());
    if (end == std::string::npos) break;
    p.answer = c.substr(at + open.size(), end - at - open.size());
    at = c.find(open, end + close.size());
  }
  auto count = [&](const std::string& tag) {
    size_t n = 0;
    for (size_t at = c.find(tag); at != std::string::npos; at = c.find(tag, at + 1)) ++n;
    return n;
  };
  for (const char* tag : {"<think>", "</think>", "<answer>", "</answer>"})
    if (count(tag) != 1) return p;
  auto blank = [&](size_t from, size_t to) {
    return std::all_of(c.begin() + static_cast<int64_t>(from), c.begin() + static_cast<int64_t>(to),
                       [](char ch) { return ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r'; });
  };
  const size_t t0 = c.find("<think>"), t1 = c.find("</think>"), a0 = c.find("<answer>"), a1 = c.find("</answer>");
  p.well_formed = t0 < t1 && t1 < a0 && a0 < a1 && blank(0, t0) && blank(t1 + 8, a0) && blank(a1 + 9, c.size());
  return p;
}

double format_reward(const std::string& completion) { return parse_completion(completion).well_formed ? 1.0 : 0.0; }

std::optional<int64_t> parse_integer(const std::string& text) {
  size_t i = 0, n = text.size();
  while (i < n && text[i] == ' ') ++i;
  while (n > i && text[n - 1] == ' ') --n;
  bool neg = i < n && text[i] == '-';
  if (neg) ++i;
  if (i >= n || n - i > 18) return std::nullopt;
  int64_t v = 0;
  for (size_t k = i; k < n; ++k) {
    if (text[k] < '0' || text[k] > '9') return std::nullopt;
    v = v * 10 + (text[k] - '0');
  }
  return neg ? -v : v;
}

std::optional<Rational> evaluate_countdown(const std::string& expr, const std::vector<int64_t>& numbers) {
  std::vector<int64_t> literals;
  auto v = ExprParser(expr).parse(literals);
  if (!v) return std::nullopt;
  auto want = numbers;
  std::sort(literals.begin(), literals.end());
  std::sort(want.begin(), want.end());
  if (literals != want) return std::nullopt;
  return v;
}

bool correct(const config::TaskConfig& cfg, const Problem& p, const std::string& c) {
  const auto parsed = parse_completion(c);
  if (!parsed.answer) return false;
  if (cfg.name == "arithmetic") return parse_integer(*parsed.answer) == p.target;
  const auto v = evaluate_countdown(*parsed.answer, p.numbers);
  return v && *v == Rational{p.target, 1};
}

double accuracy_reward(const config::TaskConfig& cfg, const Problem& p, const std::string& c) {
  if (correct(cfg, p, c)) return 1.0;
  if (cfg.name == "countdown") return parse_completion(c).answer ? 0.1 : 0.0;
  return 0.0;
}

}  // namespace ts::rl
