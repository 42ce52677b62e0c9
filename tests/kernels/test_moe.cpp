// MoE routing index build, permute and unpermute (kernels/moe.h) against references written here:
// the index build and permute are permutations and must match bitwise; the sums are checked
// against float64 with tolerances derived from fp32 rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/moe.h"
#include "tests/kernels/compare.h"

namespace {

using ts::kern::MoeRoutingStatus;

constexpr double kU = 0x1p-24;     // fp32 unit roundoff
constexpr int64_t kPoison = -777;  // poison for int64 outputs

// Top-k style ids: each row holds K distinct experts drawn from `allowed` (all of [0, E) when empty).
std::vector<int64_t> random_topk_ids(int64_t T, int64_t K, int64_t E, uint64_t seed,
                                     std::vector<int64_t> allowed = {}) {
  if (allowed.empty()) {
    allowed.resize(E);
    std::iota(allowed.begin(), allowed.end(), 0);
  }
  EXPECT_LE(K, static_cast<int64_t>(allowed.size()));
  std::mt19937_64 gen(seed);
  std::vector<int64_t> ids(T * K);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t k = 0; k < K; ++k) {  // partial Fisher-Yates: K distinct picks
      std::uniform_int_distribution<int64_t> pick(k, static_cast<int64_t>(allowed.size()) - 1);
      std::swap(allowed[k], allowed[pick(gen)]);
      ids[t * K + k] = allowed[k];
    }
  }
  return ids;
}

struct Routing {
  std::vector<int64_t> offsets, sorted_to_token, token_to_sorted;
  MoeRoutingStatus status;
};

// The definition: slots stably sorted by expert.
Routing reference_routing(const std::vector<int64_t>& ids, int64_t E) {
  const int64_t M = static_cast<int64_t>(ids.size());
  Routing r;
  r.sorted_to_token.resize(M);
  std::iota(r.sorted_to_token.begin(), r.sorted_to_token.end(), 0);
  std::stable_sort(r.sorted_to_token.begin(), r.sorted_to_token.end(),
                   [&](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  r.token_to_sorted.resize(M);
  for (int64_t i = 0; i < M; ++i) r.token_to_sorted[r.sorted_to_token[i]] = i;
  r.offsets.assign(E + 1, 0);
  for (int64_t id : ids) ++r.offsets[id + 1];
  for (int64_t e = 0; e < E; ++e) r.offsets[e + 1] += r.offsets[e];
  return r;
}

Routing run_routing(const std::vector<int64_t>& ids, int64_t T, int64_t K, int64_t E) {
  Routing r;
  r.offsets.assign(E + 1, kPoison);
  r.sorted_to_token.assign(T * K, kPoison);
  r.token_to_sorted.assign(T * K, kPoison);
  r.status = ts::kern::moe_routing_cpu(
      {ids.data(), r.offsets.data(), r.sorted_to_token.data(), r.token_to_sorted.data(), T, K, E});
  return r;
}

void expect_routing_equal(const Routing& got, const Routing& want) {
  EXPECT_TRUE(got.status.ok);
  EXPECT_EQ(got.offsets, want.offsets);
  EXPECT_EQ(got.sorted_to_token, want.sorted_to_token);
  EXPECT_EQ(got.token_to_sorted, want.token_to_sorted);
}

struct Shape {
  int64_t T, K, E;
};

TEST(MoeRouting, MatchesStableSortReference) {
  // The last shape has M = 36000 slots: several chunks on a multi-core machine.
  for (Shape s : {Shape{257, 8, 64}, Shape{1000, 2, 16}, Shape{37, 1, 5}, Shape{1, 3, 3}, Shape{6000, 6, 160}}) {
    SCOPED_TRACE(testing::Message() << "T=" << s.T << " K=" << s.K << " E=" << s.E);
    const auto ids = random_topk_ids(s.T, s.K, s.E, 11 + s.T);
    expect_routing_equal(run_routing(ids, s.T, s.K, s.E), reference_routing(ids, s.E));
  }
}

TEST(MoeRouting, EmptyExpertsAndRepeatedIds) {
  const int64_t T = 300, K = 4, E = 40;
  // Only every third expert is used, so most experts are empty (including the first and last).
  std::vector<int64_t> allowed;
  for (int64_t e = 1; e < E - 1; e += 3) allowed.push_back(e);
  const auto ids = random_topk_ids(T, K, E, 5, allowed);
  const Routing got = run_routing(ids, T, K, E);
  expect_routing_equal(got, reference_routing(ids, E));
  EXPECT_EQ(got.offsets[1], 0);
  EXPECT_EQ(got.offsets[E - 1], T * K);
  // Ids repeated within a row (not top-k like, still well defined): order by token, then k.
  std::vector<int64_t> rep(T * K);
  for (int64_t i = 0; i < T * K; ++i) rep[i] = (i * 7 / 5) % 3;
  expect_routing_equal(run_routing(rep, T, K, E), reference_routing(rep, E));
}

TEST(MoeRouting, ZeroTokens) {
  const Routing got = run_routing({}, 0, 8, 6);
  EXPECT_TRUE(got.status.ok);
  EXPECT_EQ(got.offsets, std::vector<int64_t>(7, 0));
}

TEST(MoeRouting, ReportsFirstOutOfRangeIdAndWritesNothing) {
  const int64_t T = 6000, K = 6, E = 32;  // M = 36000: two chunks on a multi-core machine
  auto check = [&](const std::vector<int64_t>& ids, int64_t t, int64_t k, int64_t id) {
    const Routing got = run_routing(ids, T, K, E);
    EXPECT_FALSE(got.status.ok);
    EXPECT_EQ(got.status.token, t);
    EXPECT_EQ(got.status.k, k);
    EXPECT_EQ(got.status.id, id);
    EXPECT_EQ(got.offsets, std::vector<int64_t>(E + 1, kPoison));
    EXPECT_EQ(got.sorted_to_token, std::vector<int64_t>(T * K, kPoison));
    EXPECT_EQ(got.token_to_sorted, std::vector<int64_t>(T * K, kPoison));
  };
  auto ids = random_topk_ids(T, K, E, 9);
  ids[5999 * K + 5] = -1;  // last slot: only the last chunk sees it
  check(ids, 5999, 5, -1);
  ids[4000 * K + 2] = E;  // an earlier one in the second half
  check(ids, 4000, 2, E);
  ids[3 * K + 1] = E + 100;  // the first bad slot wins
  check(ids, 3, 1, E + 100);
  // No experts at all: the very first slot is out of range.
  const Routing none = run_routing({0, 0}, 1, 2, 0);
  EXPECT_FALSE(none.status.ok);
  EXPECT_EQ(none.status.token, 0);
  EXPECT_EQ(none.status.k, 0);
}

// --------------------------------------------------------------------------------------------
// Permute / unpermute
// --------------------------------------------------------------------------------------------

struct RowShape {
  int64_t T, K, E, H;
};

// The last shape writes 33 MiB of x_sorted, over the CPU twin's non-temporal store threshold, with
// an odd H so row starts are unaligned (head and tail of the streamed rows take the scalar path).
const RowShape kRowShapes[] = {{64, 8, 16, 96}, {129, 1, 7, 33}, {50, 3, 9, 1}, {2048, 4, 64, 1031}};

TEST(MoePermute, GathersRowsBitwise) {
  for (RowShape s : kRowShapes) {
    SCOPED_TRACE(testing::Message() << "T=" << s.T << " K=" << s.K << " H=" << s.H);
    const int64_t M = s.T * s.K;
    const auto ids = random_topk_ids(s.T, s.K, s.E, 21 + s.H);
    const Routing rt = reference_routing(ids, s.E);
    const auto x = ts::test::random_vector(s.T * s.H, 3);
    // Walking sorted rows (sorted_to_token only) and walking tokens (with token_to_sorted).
    for (bool by_token : {false, true}) {
      SCOPED_TRACE(by_token ? "by token" : "by sorted row");
      auto xs = ts::test::poisoned(M * s.H);
      ts::kern::moe_permute_cpu({x.data(), rt.sorted_to_token.data(), xs.data(), s.T, s.K, s.H,
                                 by_token ? rt.token_to_sorted.data() : nullptr});
      int64_t mismatched_rows = 0;
      for (int64_t r = 0; r < M; ++r) {
        const float* want = x.data() + (rt.sorted_to_token[r] / s.K) * s.H;
        mismatched_rows += std::memcmp(xs.data() + r * s.H, want, sizeof(float) * s.H) != 0;
      }
      EXPECT_EQ(mismatched_rows, 0);
    }
  }
}

TEST(MoePermute, BackwardSumsEachTokensSlots) {
  for (RowShape s : kRowShapes) {
    SCOPED_TRACE(testing::Message() << "T=" << s.T << " K=" << s.K << " H=" << s.H);
    const int64_t M = s.T * s.K;
    const Routing rt = reference_routing(random_topk_ids(s.T, s.K, s.E, 31 + s.H), s.E);
    const auto gxs = ts::test::random_vector(M * s.H, 4);
    auto gx = ts::test::poisoned(s.T * s.H);
    ts::kern::moe_permute_backward_cpu({gxs.data(), rt.token_to_sorted.data(), gx.data(), s.T, s.K, s.H});
    std::vector<double> want(s.T * s.H, 0.0);
    double max_abs_sum = 0;
    for (int64_t t = 0; t < s.T; ++t) {
      for (int64_t h = 0; h < s.H; ++h) {
        double sum = 0, abs_sum = 0;
        for (int64_t k = 0; k < s.K; ++k) {
          const double v = gxs[rt.token_to_sorted[t * s.K + k] * s.H + h];
          sum += v;
          abs_sum += std::abs(v);
        }
        want[t * s.H + h] = sum;
        max_abs_sum = std::max(max_abs_sum, abs_sum);
      }
    }
    // fp32 recursive sum of K terms: |error| <= (K-1) u sum|v| (first order).
    TS_EXPECT_CLOSE(gx.data(), want.data(), s.T * s.H, 1.01 * (s.K - 1) * kU * max_abs_sum, 0.0);
  }
}

TEST(MoeUnpermute, WeightedSumMatchesFloat64) {
  for (RowShape s : kRowShapes) {
    SCOPED_TRACE(testing::Message() << "T=" << s.T << " K=" << s.K << " H=" << s.H);
    const int64_t M = s.T * s.K;
    const Routing rt = reference_routing(random_topk_ids(s.T, s.K, s.E, 41 + s.H), s.E);
    const auto ys = ts::test::random_vector(M * s.H, 5);
    const auto w = ts::test::random_vector(M, 6);
    auto y = ts::test::poisoned(s.T * s.H);
    const ts::kern::MoeUnpermuteParams p{ys.data(), rt.token_to_sorted.data(), w.data(), y.data(), s.T, s.K, s.H};
    ts::kern::moe_unpermute_cpu(p);
    std::vector<double> want(s.T * s.H);
    double max_abs_sum = 0;
    for (int64_t t = 0; t < s.T; ++t) {
      for (int64_t h = 0; h < s.H; ++h) {
        double sum = 0, abs_sum = 0;
        for (int64_t k = 0; k < s.K; ++k) {
          const double v = double(w[t * s.K + k]) * ys[rt.token_to_sorted[t * s.K + k] * s.H + h];
          sum += v;
          abs_sum += std::abs(v);
        }
        want[t * s.H + h] = sum;
        max_abs_sum = std::max(max_abs_sum, abs_sum);
      }
    }
    // K rounded products plus K-1 rounded additions: |error| <= K u sum|w y| (first order).
    TS_EXPECT_CLOSE(y.data(), want.data(), s.T * s.H, 1.01 * s.K * kU * max_abs_sum, 0.0);
    // Deterministic: a second run gives the same bits.
    auto y2 = ts::test::poisoned(s.T * s.H);
    auto p2 = p;
    p2.y = y2.data();
    ts::kern::moe_unpermute_cpu(p2);
    EXPECT_EQ(std::memcmp(y.data(), y2.data(), sizeof(float) * y.size()), 0);
  }
}

TEST(MoeUnpermute, BackwardMatchesFloat64) {
  for (RowShape s : kRowShapes) {
    SCOPED_TRACE(testing::Message() << "T=" << s.T << " K=" << s.K << " H=" << s.H);
    const int64_t M = s.T * s.K;
    const Routing rt = reference_routing(random_topk_ids(s.T, s.K, s.E, 51 + s.H), s.E);
    const auto gy = ts::test::random_vector(s.T * s.H, 7);
    const auto ys = ts::test::random_vector(M * s.H, 8);
    const auto w = ts::test::random_vector(M, 9);
    auto gys = ts::test::poisoned(M * s.H);
    auto gw = ts::test::poisoned(M);
    ts::kern::moe_unpermute_backward_cpu(
        {gy.data(), ys.data(), rt.token_to_sorted.data(), w.data(), gys.data(), gw.data(), s.T, s.K, s.H});

    std::vector<double> want_gys(M * s.H), want_gw(M);
    double max_abs_dot = 0;
    for (int64_t t = 0; t < s.T; ++t) {
      for (int64_t k = 0; k < s.K; ++k) {
        const int64_t slot = t * s.K + k, r = rt.token_to_sorted[slot];
        double dot = 0, abs_dot = 0;
        for (int64_t h = 0; h < s.H; ++h) {
          want_gys[r * s.H + h] = double(w[slot]) * gy[t * s.H + h];
          dot += double(gy[t * s.H + h]) * ys[r * s.H + h];
          abs_dot += std::abs(double(gy[t * s.H + h]) * ys[r * s.H + h]);
        }
        want_gw[slot] = dot;
        max_abs_dot = std::max(max_abs_dot, abs_dot);
      }
    }
    // grad_y_sorted is one rounded product per element: relative error <= u.
    TS_EXPECT_CLOSE(gys.data(), want_gys.data(), M * s.H, 0.0, kU);
    // grad_w is an fp32 dot of H terms: |error| <= H u sum|gy ys| (first order, any order).
    TS_EXPECT_CLOSE(gw.data(), want_gw.data(), M, 1.01 * s.H * kU * max_abs_dot, 0.0);

    // Each output alone (the other nullptr) gives the same values.
    auto gw_only = ts::test::poisoned(M);
    ts::kern::moe_unpermute_backward_cpu(
        {gy.data(), ys.data(), rt.token_to_sorted.data(), nullptr, nullptr, gw_only.data(), s.T, s.K, s.H});
    EXPECT_EQ(std::memcmp(gw_only.data(), gw.data(), sizeof(float) * M), 0);
    auto gys_only = ts::test::poisoned(M * s.H);
    ts::kern::moe_unpermute_backward_cpu(
        {gy.data(), nullptr, rt.token_to_sorted.data(), w.data(), gys_only.data(), nullptr, s.T, s.K, s.H});
    EXPECT_EQ(std::memcmp(gys_only.data(), gys.data(), sizeof(float) * M * s.H), 0);
  }
}

TEST(MoeUnpermute, ZeroTokensOrChoices) {
  const int64_t K = 4, H = 8;
  std::vector<int64_t> idx;  // [0]
  std::vector<float> empty;
  auto sentinel = ts::test::random_vector(4, 1);
  const auto before = sentinel;
  // T = 0: every kernel runs with no rows; pointers to a live buffer show that nothing is written.
  ts::kern::moe_permute_cpu({empty.data(), idx.data(), sentinel.data(), 0, K, H});
  ts::kern::moe_permute_backward_cpu({empty.data(), idx.data(), sentinel.data(), 0, K, H});
  ts::kern::moe_unpermute_cpu({empty.data(), idx.data(), empty.data(), sentinel.data(), 0, K, H});
  ts::kern::moe_unpermute_backward_cpu(
      {empty.data(), empty.data(), idx.data(), empty.data(), sentinel.data(), sentinel.data(), 0, K, H});
  EXPECT_EQ(sentinel, before);
  // K = 0 (no routed choices): the sums over k are empty, so y and grad_x are zeros.
  auto y = ts::test::poisoned(3 * H);
  ts::kern::moe_unpermute_cpu({empty.data(), idx.data(), empty.data(), y.data(), 3, 0, H});
  EXPECT_EQ(y, std::vector<float>(3 * H, 0.0f));
  auto gx = ts::test::poisoned(3 * H);
  ts::kern::moe_permute_backward_cpu({empty.data(), idx.data(), gx.data(), 3, 0, H});
  EXPECT_EQ(gx, std::vector<float>(3 * H, 0.0f));
}

}  // namespace
