// The MLA decode tests' shared pieces (kernels/mla_decode.h): problems built so that any read
// outside the contract shows (cache rows at or past a sequence's length are NaN, blocks nobody
// owns are NaN, block_table entries past the needed ones point at a NaN block, block ids are
// shuffled), the float64 gather + softmax reference, tolerances from the storage precision, the
// CPU twin's runs, and the non-finite cases both kernels are held to. Used by test_mla_decode.cpp
// (the CPU twin) and test_mla_decode_cuda.cpp (the CUDA kernel).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/mla_decode.h"
#include "tests/kernels/compare.h"

namespace ts::kern::mla_test {
struct Shape {
  int64_t S_q, H, D_qk, D_v, block_size;
  std::vector<int32_t> seq_lens;  // one per sequence (B = size)
};

inline std::string describe(const Shape& sh) {
  std::string s = "S_q=" + std::to_string(sh.S_q) + " H=" + std::to_string(sh.H) + " D_qk=" + std::to_string(sh.D_qk) +
                  " D_v=" + std::to_string(sh.D_v) + " BS=" + std::to_string(sh.block_size) + " seq_lens={";
  for (int32_t L : sh.seq_lens) s += std::to_string(L) + ",";
  return s + "}";
}

// ---- storage formats (test-side, independent of the kernels) -------------------------------
inline float bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return x;
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&x, &u, 4);
  return x;
}
inline uint16_t bf16_bits(float x) {  // x already representable (or NaN)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return std::isnan(x) ? uint16_t{0x7fc0} : static_cast<uint16_t>(u >> 16);
}
inline float bf16_value(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
// ---- problem and reference -----------------------------------------------------------------
struct Problem {
  Shape sh;
  int64_t B, num_blocks, max_blocks;
  float scale;
  std::vector<float> q;              // [B, S_q, H, D_qk]
  std::vector<float> cache;          // [NB, BS, 1, D_qk], NaN outside valid rows
  std::vector<int32_t> block_table;  // [B, MB]
};

// round: applied to every valid value (bf16/fp16 inputs), so the reference sees what the
// kernel sees.
inline Problem make_problem(const Shape& sh, uint64_t seed, float (*round)(float) = nullptr) {
  Problem pr;
  pr.sh = sh;
  pr.B = static_cast<int64_t>(sh.seq_lens.size());
  const int64_t BS = sh.block_size, D = sh.D_qk;
  std::vector<int64_t> need(pr.B);
  int64_t used = 0, most = 0;
  for (int64_t b = 0; b < pr.B; ++b) {
    need[b] = (sh.seq_lens[b] + BS - 1) / BS;
    used += need[b];
    most = std::max(most, need[b]);
  }
  pr.max_blocks = most + 2;  // always some entries past the needed ones
  pr.num_blocks = used + 2;  // two blocks nobody owns (NaN)
  std::vector<int32_t> perm(pr.num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(seed));
  const int32_t nan_block = perm[used];
  pr.block_table.assign(pr.B * pr.max_blocks, nan_block);
  pr.cache = ts::test::poisoned(pr.num_blocks * BS * D);
  int64_t next = 0;
  for (int64_t b = 0; b < pr.B; ++b) {
    for (int64_t i = 0; i < need[b]; ++i) pr.block_table[b * pr.max_blocks + i] = perm[next++];
    const std::vector<float> rows = ts::test::random_vector(sh.seq_lens[b] * D, seed + 100 + b);
    for (int64_t p = 0; p < sh.seq_lens[b]; ++p) {
      const int64_t at = (pr.block_table[b * pr.max_blocks + p / BS] * BS + p % BS) * D;
      for (int64_t d = 0; d < D; ++d) pr.cache[at + d] = round ? round(rows[p * D + d]) : rows[p * D + d];
    }
  }
  pr.q = ts::test::random_vector(pr.B * sh.S_q * sh.H * D, seed + 1);
  if (round)
    for (float& x : pr.q) x = round(x);
  // Scores of std ~1.3: peaked enough that the running max moves and rescaling matters.
  pr.scale = 4.0f / std::sqrt(static_cast<float>(D));
  return pr;
}

struct Reference {
  std::vector<double> out, lse;  // [B, S_q, H, D_v], [B, H, S_q]
  double score_l2 = 0;           // max over rows, positions of scale * sqrt(sum_d (q_d k_d)^2)
  double score_abs = 0;          // max |score|
  int64_t longest = 0;           // most positions any row attends
};

inline Reference reference(const Problem& pr) {
  const Shape& sh = pr.sh;
  const int64_t D = sh.D_qk, Dv = sh.D_v, BS = sh.block_size;
  Reference ref;
  ref.out.assign(pr.B * sh.S_q * sh.H * Dv, 0.0);
  ref.lse.assign(pr.B * sh.H * sh.S_q, -std::numeric_limits<double>::infinity());
  for (int64_t b = 0; b < pr.B; ++b) {
    std::vector<const float*> rows(sh.seq_lens[b]);
    for (int64_t p = 0; p < sh.seq_lens[b]; ++p)
      rows[p] = pr.cache.data() + (pr.block_table[b * pr.max_blocks + p / BS] * BS + p % BS) * D;
    for (int64_t s = 0; s < sh.S_q; ++s) {
      const int64_t n = sh.seq_lens[b] - sh.S_q + s + 1;
      if (n <= 0) continue;
      ref.longest = std::max(ref.longest, n);
      for (int64_t h = 0; h < sh.H; ++h) {
        const float* q = pr.q.data() + ((b * sh.S_q + s) * sh.H + h) * D;
        std::vector<double> sc(n);
        double mx = -std::numeric_limits<double>::infinity();  // NaN once a score is NaN
        for (int64_t p = 0; p < n; ++p) {
          double dot = 0, sq = 0;
          for (int64_t d = 0; d < D; ++d) {
            const double t = static_cast<double>(q[d]) * rows[p][d];
            dot += t;
            sq += t * t;
          }
          sc[p] = pr.scale * dot;
          if (std::isfinite(sc[p])) {  // (tolerances come from the finite scores)
            ref.score_l2 = std::max(ref.score_l2, pr.scale * std::sqrt(sq));
            ref.score_abs = std::max(ref.score_abs, std::abs(sc[p]));
          }
          mx = std::isnan(sc[p]) || std::isnan(mx) ? sc[p] + mx : std::max(mx, sc[p]);
        }
        double den = 0;
        double* o = ref.out.data() + ((b * sh.S_q + s) * sh.H + h) * Dv;
        for (int64_t p = 0; p < n; ++p) {
          const double w = std::exp(sc[p] - mx);
          den += w;
          for (int64_t c = 0; c < Dv; ++c) o[c] += w * rows[p][c];
        }
        for (int64_t c = 0; c < Dv; ++c) o[c] /= den;
        // log-sum-exp over a +inf score is +inf (out is NaN: inf / inf), as torch.logsumexp.
        ref.lse[(b * sh.H + h) * sh.S_q + s] = mx == std::numeric_limits<double>::infinity() ? mx : mx + std::log(den);
      }
    }
  }
  return ref;
}

struct Output {
  std::vector<float> out, lse;
};

// Tolerances from fp32 arithmetic (u = 2^-24), all values |x| <= 1:
// - a score is a D_qk-term dot product; its partial sums wander like a random walk, so the
//   rounding error is ~ u * sqrt(D_qk) * ||terms||_2 (score_l2), plus u * |score| for
//   pre-scaling q;
// - a score error e moves the softmax weights by a factor exp(+-e), so out moves by <= e
//   (values are bounded by 1) and lse by e;
// - out and the denominator sum up to `longest` positive terms: ~ u * sqrt(longest) relative;
// - exp2 by polynomial: ~3e-7 relative per weight.
// The factor 8 covers the constants in these estimates. A narrow dtype adds `rounding`: the
// output's own rounding (relative), and for a tensor-core kernel the rounding of the
// probabilities fed to the PV product (absolute, values bounded by 1).
struct Tolerance {
  double atol, rtol, lse_atol;
};
struct Rounding {
  double abs = 0, rel = 0;
};
inline Tolerance tolerance(const Problem& pr, const Reference& ref, Rounding rounding) {
  const double u = std::ldexp(1.0, -24);
  const double score_err = u * (std::sqrt(static_cast<double>(pr.sh.D_qk)) * ref.score_l2 + ref.score_abs);
  const double sum_err = u * std::sqrt(static_cast<double>(ref.longest) + 1) + 3e-7;
  const double fp32 = 8 * (score_err + sum_err);
  return {fp32 + rounding.abs, rounding.rel, fp32 + 8 * u * ref.score_abs};
}

inline void expect_matches(const Problem& pr, const Reference& ref, const Output& got, Rounding rounding,
                           double max_cos, const std::string& what) {
  const Tolerance tol = tolerance(pr, ref, rounding);
  const std::string ctx = what + " " + describe(pr.sh);
  TS_EXPECT_CLOSE(got.out.data(), ref.out.data(), static_cast<int64_t>(got.out.size()), tol.atol, tol.rtol, max_cos,
                  ctx + " out");
  TS_EXPECT_CLOSE(got.lse.data(), ref.lse.data(), static_cast<int64_t>(got.lse.size()), tol.lse_atol, 0.0, 1.0,
                  ctx + " lse");
}

inline MlaDecodeParams params_for(const Problem& pr) {
  MlaDecodeParams p;
  p.B = pr.B;
  p.S_q = pr.sh.S_q;
  p.H = pr.sh.H;
  p.D_qk = pr.sh.D_qk;
  p.D_v = pr.sh.D_v;
  p.num_blocks = pr.num_blocks;
  p.block_size = pr.sh.block_size;
  p.max_blocks = pr.max_blocks;
  p.softmax_scale = pr.scale;
  p.block_table = pr.block_table.data();
  p.seq_lens = pr.sh.seq_lens.data();
  return p;
}

inline Output run_cpu_fp32(const Problem& pr) {
  Output r{ts::test::poisoned(pr.B * pr.sh.S_q * pr.sh.H * pr.sh.D_v), ts::test::poisoned(pr.B * pr.sh.H * pr.sh.S_q)};
  MlaDecodeParams p = params_for(pr);
  p.q = pr.q.data();
  p.kv_cache = pr.cache.data();
  p.out = r.out.data();
  p.lse = r.lse.data();
  p.dtype = MlaDtype::kFloat32;
  mla_decode_cpu(p);
  return r;
}

inline Output run_cpu_bf16(const Problem& pr) {
  std::vector<uint16_t> q(pr.q.size()), cache(pr.cache.size());
  std::transform(pr.q.begin(), pr.q.end(), q.begin(), bf16_bits);
  std::transform(pr.cache.begin(), pr.cache.end(), cache.begin(), bf16_bits);
  std::vector<uint16_t> out(pr.B * pr.sh.S_q * pr.sh.H * pr.sh.D_v, 0x7fc0);  // NaN
  Output r{{}, ts::test::poisoned(pr.B * pr.sh.H * pr.sh.S_q)};
  MlaDecodeParams p = params_for(pr);
  p.q = q.data();
  p.kv_cache = cache.data();
  p.out = out.data();
  p.lse = r.lse.data();
  p.dtype = MlaDtype::kBFloat16;
  mla_decode_cpu(p);
  r.out.resize(out.size());
  std::transform(out.begin(), out.end(), r.out.begin(), bf16_value);
  return r;
}

// ---- non-finite inputs (the contract's rules; the same cases for both kernels) -------------
// Seven sequences, S_q = 2, lengths L >= 4 except sequences 5 (one row) and 6 (empty). A value
// column is also a key column (the value is the row's latent), so an inf value comes with an
// inf key component: k = D_v is the first rope column (key only), column 2 is a value column.
//   0: q of (s 0, h 1) holds a NaN                   -> that row: out and lse NaN
//   1: a NaN rope column at position 2              -> every row of the sequence NaN
//   2: +inf rope column at position 3; q[k] = +1 for h % 3 == 0 (+inf score: out NaN, lse +inf),
//      -1 for h % 3 == 1 (-inf score: weight 0, all finite), 0 for h % 3 == 2 (0 * inf: NaN score)
//   3: +inf in value column 2 at position 1, q[2] = -1: a -inf score, so that position's weight
//      is 0 and out column 2 is 0 * inf (the reference's NaN; inf or NaN allowed); lse finite
//   4: NaN everywhere at position L - 1, which only the last query sees -> s 1 NaN, s 0 finite
//   5: one row, +inf in every value column, q[0] = 1, q[1] = -1: s 0 sees nothing (0, -inf);
//      s 1 scores inf - inf = NaN
//   6: empty -> 0 and -inf
inline Shape nonfinite_shape(int64_t H, int64_t D_qk, int64_t D_v, int64_t block_size, int32_t L) {
  return {2, H, D_qk, D_v, block_size, {L, L, L, L, L, 1, 0}};
}

inline Problem make_nonfinite_problem(const Shape& sh, uint64_t seed, float (*round)(float) = nullptr) {
  Problem pr = make_problem(sh, seed, round);
  const int64_t H = sh.H, D = sh.D_qk, BS = sh.block_size, k = sh.D_v;
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  auto row = [&](int64_t b, int64_t pos) {
    return pr.cache.data() + (pr.block_table[b * pr.max_blocks + pos / BS] * BS + pos % BS) * D;
  };
  auto q = [&](int64_t b, int64_t s, int64_t h) { return pr.q.data() + ((b * sh.S_q + s) * H + h) * D; };
  const int32_t L = sh.seq_lens[0];
  q(0, 0, std::min<int64_t>(1, H - 1))[3] = nan;
  row(1, 2)[k] = nan;
  row(2, 3)[k] = inf;
  for (int64_t s = 0; s < sh.S_q; ++s)
    for (int64_t h = 0; h < H; ++h) q(2, s, h)[k] = h % 3 == 0 ? 1.0f : h % 3 == 1 ? -1.0f : 0.0f;
  row(3, 1)[2] = inf;
  std::fill_n(row(4, L - 1), D, nan);
  std::fill_n(row(5, 0), sh.D_v, inf);
  for (int64_t s = 0; s < sh.S_q; ++s)
    for (int64_t h = 0; h < H; ++h) {
      q(3, s, h)[2] = -1.0f;
      q(5, s, h)[0] = 1.0f;
      q(5, s, h)[1] = -1.0f;
    }
  return pr;
}

// Against the float64 reference: lse of the same class (NaN, +-inf) or within the tolerance; out
// non-finite where the reference's is (inf and NaN both allowed) and otherwise within it.
inline void expect_matches_nonfinite(const Problem& pr, const Reference& ref, const Output& got, Rounding rounding,
                                     double max_cos, const std::string& what) {
  Output finite = got;
  Reference want = ref;
  for (size_t i = 0; i < want.out.size(); ++i)
    if (!std::isfinite(want.out[i])) {
      EXPECT_FALSE(std::isfinite(finite.out[i])) << what << " out[" << i << "] = " << finite.out[i];
      finite.out[i] = 0.0f;
      want.out[i] = 0.0;
    }
  expect_matches(pr, want, finite, rounding, max_cos, what);
}

// What the contract fixes, case by case (see make_nonfinite_problem).
inline void expect_nonfinite_rules(const Problem& pr, const Output& got, const std::string& what) {
  const Shape& sh = pr.sh;
  const int64_t S_q = sh.S_q, H = sh.H, Dv = sh.D_v;
  const float inf = std::numeric_limits<float>::infinity();
  auto out = [&](int64_t b, int64_t s, int64_t h, int64_t c) { return got.out[((b * S_q + s) * H + h) * Dv + c]; };
  auto lse = [&](int64_t b, int64_t s, int64_t h) { return got.lse[(b * H + h) * S_q + s]; };
  for (int64_t s = 0; s < S_q; ++s)
    for (int64_t h = 0; h < H; ++h) {
      const std::string at = what + " s=" + std::to_string(s) + " h=" + std::to_string(h);
      const bool nan_q = s == 0 && h == std::min<int64_t>(1, H - 1);
      EXPECT_EQ(std::isnan(lse(0, s, h)), nan_q) << at;
      EXPECT_TRUE(std::isnan(lse(1, s, h))) << at;
      EXPECT_EQ(lse(2, s, h) == inf, h % 3 == 0) << at;
      EXPECT_EQ(std::isfinite(lse(2, s, h)), h % 3 == 1) << at;
      EXPECT_EQ(std::isnan(lse(2, s, h)), h % 3 == 2) << at;
      EXPECT_TRUE(std::isfinite(lse(3, s, h))) << at;
      EXPECT_TRUE(std::isnan(lse(5, s, h)) || s < S_q - 1) << at;
      EXPECT_EQ(std::isnan(lse(4, s, h)), s == S_q - 1) << at;
      EXPECT_EQ(lse(5, s, h) == -inf, s < S_q - 1) << at;
      EXPECT_EQ(lse(6, s, h), -inf) << at;
      for (int64_t c = 0; c < Dv; ++c) {
        EXPECT_EQ(std::isnan(out(0, s, h, c)), nan_q) << at;
        EXPECT_TRUE(std::isnan(out(1, s, h, c))) << at;
        EXPECT_EQ(std::isnan(out(2, s, h, c)), h % 3 != 1) << at;
        EXPECT_EQ(std::isfinite(out(3, s, h, c)), c != 2) << at;
        EXPECT_EQ(std::isnan(out(4, s, h, c)), s == S_q - 1) << at;
        if (s == S_q - 1)
          EXPECT_TRUE(std::isnan(out(5, s, h, c))) << at;
        else
          EXPECT_EQ(out(5, s, h, c), 0.0f) << at;
        EXPECT_EQ(out(6, s, h, c), 0.0f) << at;
      }
    }
}

}  // namespace ts::kern::mla_test
