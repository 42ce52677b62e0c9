// One comparison helper for every numeric test: per-element abs-or-rel tolerance, the cosine-style
// difference 1 - 2*sum(xy)/sum(x^2+y^2) in double, matching NaN/Inf positions, and the worst
// index reported with every parameter on failure.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace ts::test {

struct CompareResult {
  bool ok = true;
  double max_abs = 0, max_rel = 0, cos_diff = 0;
  int64_t worst = -1, mismatched_nonfinite = 0;
  std::string message;
};

// `got` and `want` have n elements. An element passes when |got-want| <= atol + rtol*|want|.
// Non-finite values must sit at the same positions with the same class (NaN, +Inf, -Inf).
template <class A, class B>
CompareResult compare(const A* got, const B* want, int64_t n, double atol, double rtol, double max_cos_diff = 1.0,
                      const std::string& what = "") {
  CompareResult r;
  double sxy = 0, sxx_yy = 0, worst_excess = -1;
  for (int64_t i = 0; i < n; ++i) {
    double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (!std::isfinite(g) || !std::isfinite(w)) {
      bool same = (std::isnan(g) && std::isnan(w)) || (std::isinf(g) && std::isinf(w) && (g > 0) == (w > 0));
      if (!same) {
        if (r.mismatched_nonfinite == 0 && r.worst < 0) r.worst = i;
        ++r.mismatched_nonfinite;
      }
      continue;
    }
    double d = std::abs(g - w);
    r.max_abs = std::max(r.max_abs, d);
    if (w != 0) r.max_rel = std::max(r.max_rel, d / std::abs(w));
    double excess = d - (atol + rtol * std::abs(w));
    if (excess > 0 && excess > worst_excess) {
      worst_excess = excess;
      r.worst = i;
    }
    sxy += g * w;
    sxx_yy += g * g + w * w;
  }
  r.cos_diff = sxx_yy > 0 ? 1.0 - 2.0 * sxy / sxx_yy : 0.0;
  r.ok = worst_excess <= 0 && r.mismatched_nonfinite == 0 && r.cos_diff <= max_cos_diff;
  if (!r.ok) {
    std::ostringstream os;
    os << what << ": n=" << n << " atol=" << atol << " rtol=" << rtol << " max_abs=" << r.max_abs
       << " max_rel=" << r.max_rel << " cos_diff=" << r.cos_diff << " (limit " << max_cos_diff
       << ") nonfinite_mismatches=" << r.mismatched_nonfinite;
    if (r.worst >= 0)
      os << " worst index " << r.worst << ": got " << static_cast<double>(got[r.worst]) << " want "
         << static_cast<double>(want[r.worst]);
    r.message = os.str();
  }
  return r;
}

#define TS_EXPECT_CLOSE(got, want, n, atol, rtol, ...)                                   \
  do {                                                                                   \
    auto ts_r_ = ::ts::test::compare((got), (want), (n), (atol), (rtol), ##__VA_ARGS__); \
    EXPECT_TRUE(ts_r_.ok) << ts_r_.message;                                              \
  } while (0)

// Fresh random data, never zeros: uniform in [-scale, scale] with |x| >= scale * 1e-3.
inline std::vector<float> random_vector(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) {
    do x = dist(gen);
    while (std::abs(x) < scale * 1e-3f);
  }
  return v;
}

inline std::vector<float> poisoned(int64_t n) { return std::vector<float>(n, std::nanf("")); }

}  // namespace ts::test
