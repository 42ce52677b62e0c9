// Decode attention (kernels/decode_attention.h) against a float64 softmax attention: MHA, GQA and
// MQA groupings, D != Dv, strided k and v (a view of a larger pool), per-query visible lengths
// (ragged, one key only, all keys), and a query's output independent of the other queries.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/decode_attention.h"
#include "tests/kernels/compare.h"

namespace {

struct Case {
  int64_t B, S, H, Hk, L, D, Dv, pad_rows;  // pad_rows: extra pool rows per sequence (strided k, v)
};

struct Data {
  std::vector<float> q, k, v;
  std::vector<int64_t> last;
  int64_t rows;  // pool rows per sequence
};

Data make(const Case& c, uint64_t seed) {
  Data d;
  d.rows = c.L + c.pad_rows;
  d.q = ts::test::random_vector(c.B * c.S * c.H * c.D, seed);
  d.k = ts::test::random_vector(c.B * d.rows * c.Hk * c.D, seed + 1, 2.0f);
  d.v = ts::test::random_vector(c.B * d.rows * c.Hk * c.Dv, seed + 2);
  std::mt19937_64 gen(seed + 3);
  for (int64_t i = 0; i < c.B * c.S; ++i) d.last.push_back(static_cast<int64_t>(gen() % c.L));
  d.last[0] = 0;            // one key only
  d.last.back() = c.L - 1;  // every key
  return d;
}

std::vector<float> run(const Case& c, const Data& d, float scale) {
  auto out = ts::test::poisoned(c.B * c.S * c.H * c.Dv);
  ts::kern::decode_attention_cpu({d.q.data(), d.k.data(), d.v.data(), d.last.data(), out.data(), c.B, c.S, c.H, c.Hk,
                                  c.L, c.D, c.Dv, d.rows * c.Hk * c.D, c.Hk * c.D, d.rows * c.Hk * c.Dv, c.Hk * c.Dv,
                                  scale});
  return out;
}

TEST(DecodeAttention, MatchesFloat64) {
  for (const Case& c : {Case{1, 1, 4, 4, 65, 32, 32, 0}, Case{2, 3, 8, 2, 40, 16, 16, 7},
                        Case{3, 2, 4, 1, 17, 24, 8, 3}, Case{2, 4, 6, 3, 200, 13, 11, 0}}) {
    SCOPED_TRACE("B=" + std::to_string(c.B) + " S=" + std::to_string(c.S) + " H=" + std::to_string(c.H) +
                 " Hk=" + std::to_string(c.Hk) + " L=" + std::to_string(c.L) + " D=" + std::to_string(c.D) +
                 " Dv=" + std::to_string(c.Dv));
    const Data d = make(c, 11 + c.L);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
    const auto got = run(c, d, scale);
    std::vector<double> want(got.size());
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t s = 0; s < c.S; ++s)
        for (int64_t h = 0; h < c.H; ++h) {
          const int64_t g = h / (c.H / c.Hk), last = d.last[b * c.S + s];
          const float* q = &d.q[((b * c.S + s) * c.H + h) * c.D];
          std::vector<double> sc(last + 1);
          double mx = -INFINITY, sum = 0;
          for (int64_t j = 0; j <= last; ++j) {
            double dot = 0;
            for (int64_t e = 0; e < c.D; ++e) dot += double(q[e]) * d.k[((b * d.rows + j) * c.Hk + g) * c.D + e];
            sc[j] = dot * scale;
            mx = std::max(mx, sc[j]);
          }
          for (auto& x : sc) sum += (x = std::exp(x - mx));
          for (int64_t e = 0; e < c.Dv; ++e) {
            double o = 0;
            for (int64_t j = 0; j <= last; ++j) o += sc[j] / sum * d.v[((b * d.rows + j) * c.Hk + g) * c.Dv + e];
            want[((b * c.S + s) * c.H + h) * c.Dv + e] = o;
          }
        }
    // fp32 scores over D terms of |q k| <= 2 and a softmax-weighted mean of |v| <= 1 over <= L
    // terms: errors of a few hundred ulps at these sizes, far below any wrong mask or head.
    TS_EXPECT_CLOSE(got.data(), want.data(), static_cast<int64_t>(got.size()), 2e-5, 1e-4);
  }
}

TEST(DecodeAttention, QueryIndependentOfOtherQueries) {
  const Case c{2, 3, 4, 2, 30, 16, 16, 2};
  const Data d = make(c, 5);
  const auto all = run(c, d, 0.25f);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t s = 0; s < c.S; ++s) {
      Case one = c;
      one.B = 1, one.S = 1;
      Data d1 = d;
      d1.q.assign(d.q.begin() + (b * c.S + s) * c.H * c.D, d.q.begin() + (b * c.S + s + 1) * c.H * c.D);
      d1.k.assign(d.k.begin() + b * d.rows * c.Hk * c.D, d.k.begin() + (b + 1) * d.rows * c.Hk * c.D);
      d1.v.assign(d.v.begin() + b * d.rows * c.Hk * c.Dv, d.v.begin() + (b + 1) * d.rows * c.Hk * c.Dv);
      d1.last = {d.last[b * c.S + s]};
      const auto alone = run(one, d1, 0.25f);
      for (int64_t i = 0; i < c.H * c.Dv; ++i) ASSERT_EQ(alone[i], all[(b * c.S + s) * c.H * c.Dv + i]);
    }
}

}  // namespace
