// MoE grouped GEMM (kernels/moe.h) against a per-expert float64 loop: forward (NT) and the backward
// pieces grad_x (NN) and grad_w (TN), with empty experts, uneven loads, one expert taking every
// row, and no rows at all.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/moe.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#include "tests/kernels/compare.h"

namespace {

constexpr double kU = 0x1p-24;  // fp32 unit roundoff

struct GemmCase {
  std::vector<int64_t> counts;  // rows per expert
  int64_t N, H;
};

std::vector<int64_t> offsets_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> off(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) off[e + 1] = off[e] + counts[e];
  return off;
}

// A dot product of n fp32 terms has |error| <= n u sum|a b| (first order, any summation order or
// blocking, with or without FMA). Returns that bound for the worst element, with a 1% margin.
double dot_bound(int64_t n, double max_abs_sum) { return 1.01 * std::max<int64_t>(n, 1) * kU * max_abs_sum; }

std::string describe(const GemmCase& c) {
  std::string s = "counts={";
  for (int64_t n : c.counts) s += std::to_string(n) + ",";
  return s + "} N=" + std::to_string(c.N) + " H=" + std::to_string(c.H);
}

const std::vector<GemmCase>& cases() {
  static const std::vector<GemmCase> all = {
      {{64, 64, 64, 64}, 48, 80},                   // balanced
      {{0, 300, 5, 0, 77, 1, 0, 129}, 33, 70},      // uneven, empty experts (first one too), odd sizes
      {{0, 700, 0}, 40, 24},                        // one expert takes every row: split into tiles
      {{40}, 16, 8},                                // a single small tile (runs on the calling thread)
      {{200, 0, 31, 250, 0, 0, 180, 90}, 130, 96},  // N over the minimum tile: grad_w split by features
      {{3, 1, 2, 0}, 5, 1},                         // H = 1
      {{0, 300, 13, 280}, 530, 600},                // depth and width over one packed block (256 x 512)
  };
  return all;
}

TEST(MoeGroupedGemm, ForwardMatchesPerExpertFloat64) {
  for (const GemmCase& c : cases()) {
    SCOPED_TRACE(describe(c));
    const auto off = offsets_of(c.counts);
    const int64_t E = c.counts.size(), M = off[E], N = c.N, H = c.H;
    const auto x = ts::test::random_vector(M * H, 1);
    const auto w = ts::test::random_vector(E * N * H, 2);
    auto out = ts::test::poisoned(M * N);
    ts::kern::moe_grouped_gemm_cpu({x.data(), w.data(), off.data(), out.data(), M, N, H, E});

    std::vector<double> want(M * N);
    double max_abs = 0;
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t r = off[e]; r < off[e + 1]; ++r) {
        for (int64_t n = 0; n < N; ++n) {
          double acc = 0, abs_acc = 0;
          for (int64_t h = 0; h < H; ++h) {
            const double v = double(x[r * H + h]) * w[(e * N + n) * H + h];
            acc += v;
            abs_acc += std::abs(v);
          }
          want[r * N + n] = acc;
          max_abs = std::max(max_abs, abs_acc);
        }
      }
    }
    TS_EXPECT_CLOSE(out.data(), want.data(), M * N, dot_bound(H, max_abs), 0.0);
  }
}

TEST(MoeGroupedGemm, BackwardMatchesPerExpertFloat64) {
  for (const GemmCase& c : cases()) {
    SCOPED_TRACE(describe(c));
    const auto off = offsets_of(c.counts);
    const int64_t E = c.counts.size(), M = off[E], N = c.N, H = c.H;
    const auto x = ts::test::random_vector(M * H, 3);
    const auto w = ts::test::random_vector(E * N * H, 4);
    const auto go = ts::test::random_vector(M * N, 5);
    auto gx = ts::test::poisoned(M * H);
    auto gw = ts::test::poisoned(E * N * H);
    ts::kern::moe_grouped_gemm_backward_cpu(
        {go.data(), x.data(), w.data(), off.data(), gx.data(), gw.data(), M, N, H, E});

    // grad_x[r, h] = sum_n go[r, n] w[e, n, h]
    std::vector<double> want_gx(M * H);
    double max_gx = 0;
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t r = off[e]; r < off[e + 1]; ++r) {
        for (int64_t h = 0; h < H; ++h) {
          double acc = 0, abs_acc = 0;
          for (int64_t n = 0; n < N; ++n) {
            const double v = double(go[r * N + n]) * w[(e * N + n) * H + h];
            acc += v;
            abs_acc += std::abs(v);
          }
          want_gx[r * H + h] = acc;
          max_gx = std::max(max_gx, abs_acc);
        }
      }
    }
    TS_EXPECT_CLOSE(gx.data(), want_gx.data(), M * H, dot_bound(N, max_gx), 0.0);

    // grad_w[e, n, h] = sum_{r in e} go[r, n] x[r, h]; exactly zero for an empty expert.
    std::vector<double> want_gw(E * N * H);
    double max_gw = 0;
    int64_t max_rows = 0;
    for (int64_t e = 0; e < E; ++e) {
      max_rows = std::max(max_rows, off[e + 1] - off[e]);
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t h = 0; h < H; ++h) {
          double acc = 0, abs_acc = 0;
          for (int64_t r = off[e]; r < off[e + 1]; ++r) {
            const double v = double(go[r * N + n]) * x[r * H + h];
            acc += v;
            abs_acc += std::abs(v);
          }
          want_gw[(e * N + n) * H + h] = acc;
          max_gw = std::max(max_gw, abs_acc);
        }
      }
    }
    TS_EXPECT_CLOSE(gw.data(), want_gw.data(), E * N * H, dot_bound(max_rows, max_gw), 0.0);
    for (int64_t e = 0; e < E; ++e) {
      if (c.counts[e] != 0) continue;
      const auto first = gw.begin() + e * N * H;
      EXPECT_TRUE(std::all_of(first, first + N * H, [](float v) { return v == 0.0f; })) << "expert " << e;
    }

    // Each output alone gives the same bits.
    auto gx_only = ts::test::poisoned(M * H);
    ts::kern::moe_grouped_gemm_backward_cpu(
        {go.data(), nullptr, w.data(), off.data(), gx_only.data(), nullptr, M, N, H, E});
    EXPECT_EQ(gx_only, gx);
    auto gw_only = ts::test::poisoned(E * N * H);
    ts::kern::moe_grouped_gemm_backward_cpu(
        {go.data(), x.data(), nullptr, off.data(), nullptr, gw_only.data(), M, N, H, E});
    EXPECT_EQ(gw_only, gw);
  }
}

// Every output element is one dot product summed in order over k, whatever the tiling: the
// results are bitwise the same with 1 thread and with several.
TEST(MoeGroupedGemm, ResultsDoNotDependOnThreads) {
#if defined(_OPENMP)
  const int threads = omp_get_max_threads();
  for (const GemmCase& c : cases()) {
    SCOPED_TRACE(describe(c));
    const auto off = offsets_of(c.counts);
    const int64_t E = c.counts.size(), M = off[E], N = c.N, H = c.H;
    const auto x = ts::test::random_vector(M * H, 5), w = ts::test::random_vector(E * N * H, 6);
    const auto go = ts::test::random_vector(M * N, 7);
    auto run = [&](int t) {
      omp_set_num_threads(t);
      std::vector<float> out(M * N), gx(M * H), gw(E * N * H);
      ts::kern::moe_grouped_gemm_cpu({x.data(), w.data(), off.data(), out.data(), M, N, H, E});
      ts::kern::moe_grouped_gemm_backward_cpu(
          {go.data(), x.data(), w.data(), off.data(), gx.data(), gw.data(), M, N, H, E});
      out.insert(out.end(), gx.begin(), gx.end());
      out.insert(out.end(), gw.begin(), gw.end());
      return out;
    };
    const auto one = run(1), three = run(3);
    omp_set_num_threads(threads);
    ASSERT_EQ(one.size(), three.size());
    EXPECT_TRUE(std::equal(one.begin(), one.end(), three.begin()));
  }
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

TEST(MoeGroupedGemm, NoRows) {
  const int64_t E = 3, N = 4, H = 5;
  const std::vector<int64_t> off(E + 1, 0);
  const auto w = ts::test::random_vector(E * N * H, 6);
  std::vector<float> none;
  ts::kern::moe_grouped_gemm_cpu({none.data(), w.data(), off.data(), none.data(), 0, N, H, E});
  // With no rows every expert is empty: grad_w is all zeros, grad_x has nothing to write.
  auto gw = ts::test::poisoned(E * N * H);
  ts::kern::moe_grouped_gemm_backward_cpu(
      {none.data(), none.data(), w.data(), off.data(), none.data(), gw.data(), 0, N, H, E});
  EXPECT_TRUE(std::all_of(gw.begin(), gw.end(), [](float v) { return v == 0.0f; }));
}

}  // namespace
