// libFuzzer target: the countdown checker and the completion parser (csrc/rl/tasks.h) on arbitrary
// bytes. The first byte picks how many of the next bytes are the numbers (0-6); the rest is the
// text, given to evaluate_countdown, parse_completion, format_reward and parse_integer. None may
// crash, throw, leak or hit undefined behaviour; an evaluated expression's value is a reduced
// fraction with a positive denominator. scripts/fuzz.sh builds and runs it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "csrc/rl/tasks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t n = std::min<size_t>(data[0] % 7, size - 1);
  std::vector<int64_t> numbers;
  for (size_t i = 0; i < n; ++i) numbers.push_back(data[1 + i] % 101);
  const std::string text(reinterpret_cast<const char*>(data + 1 + n), size - 1 - n);
  if (auto v = ts::rl::evaluate_countdown(text, numbers)) {
    if (v->den <= 0 || std::gcd(v->num, v->den) != 1) std::abort();
  }
  (void)ts::rl::parse_completion(text);
  (void)ts::rl::format_reward(text);
  (void)ts::rl::parse_integer(text);
  return 0;
}
