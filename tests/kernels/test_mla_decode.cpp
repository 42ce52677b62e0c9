// MLA decode (kernels/mla_decode.h): the CPU twin against a float64 gather + softmax reference,
// and the CUDA kernel against the same reference where a GPU exists.
//
// Every problem is built so that any read outside the contract shows: cache rows at or past a
// sequence's length are NaN, blocks nobody owns are NaN, block_table entries past the needed
// ones point at a NaN block, and block ids are shuffled. Outputs are NaN-poisoned before a run.
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

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime.h>

#include <stdexcept>

#include "kernels/cuda/cuda_check.cuh"
#endif

namespace ts::kern {
namespace {

struct Shape {
  int64_t S_q, H, D_qk, D_v, block_size;
  std::vector<int32_t> seq_lens;  // one per sequence (B = size)
};

std::string describe(const Shape& sh) {
  std::string s = "S_q=" + std::to_string(sh.S_q) + " H=" + std::to_string(sh.H) + " D_qk=" + std::to_string(sh.D_qk) +
                  " D_v=" + std::to_string(sh.D_v) + " BS=" + std::to_string(sh.block_size) + " seq_lens={";
  for (int32_t L : sh.seq_lens) s += std::to_string(L) + ",";
  return s + "}";
}

// ---- storage formats (test-side, independent of the kernels) -------------------------------
float bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return x;
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&x, &u, 4);
  return x;
}
uint16_t bf16_bits(float x) {  // x already representable (or NaN)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return std::isnan(x) ? uint16_t{0x7fc0} : static_cast<uint16_t>(u >> 16);
}
float bf16_value(uint16_t h) {
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
Problem make_problem(const Shape& sh, uint64_t seed, float (*round)(float) = nullptr) {
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

Reference reference(const Problem& pr) {
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
Tolerance tolerance(const Problem& pr, const Reference& ref, Rounding rounding) {
  const double u = std::ldexp(1.0, -24);
  const double score_err = u * (std::sqrt(static_cast<double>(pr.sh.D_qk)) * ref.score_l2 + ref.score_abs);
  const double sum_err = u * std::sqrt(static_cast<double>(ref.longest) + 1) + 3e-7;
  const double fp32 = 8 * (score_err + sum_err);
  return {fp32 + rounding.abs, rounding.rel, fp32 + 8 * u * ref.score_abs};
}

void expect_matches(const Problem& pr, const Reference& ref, const Output& got, Rounding rounding, double max_cos,
                    const std::string& what) {
  const Tolerance tol = tolerance(pr, ref, rounding);
  const std::string ctx = what + " " + describe(pr.sh);
  TS_EXPECT_CLOSE(got.out.data(), ref.out.data(), static_cast<int64_t>(got.out.size()), tol.atol, tol.rtol, max_cos,
                  ctx + " out");
  TS_EXPECT_CLOSE(got.lse.data(), ref.lse.data(), static_cast<int64_t>(got.lse.size()), tol.lse_atol, 0.0, 1.0,
                  ctx + " lse");
}

MlaDecodeParams params_for(const Problem& pr) {
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

Output run_cpu_fp32(const Problem& pr) {
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

Output run_cpu_bf16(const Problem& pr) {
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

// Sets the OpenMP thread count for a scope: split-KV depends on it, so tests pin it.
class ThreadCount {
 public:
  explicit ThreadCount(int n) {
#if defined(_OPENMP)
    prev_ = omp_get_max_threads();
    omp_set_num_threads(n);
#endif
  }
  ~ThreadCount() {
#if defined(_OPENMP)
    omp_set_num_threads(prev_);
#endif
  }

 private:
  int prev_ = 1;
};

// fp32 errors are ~1e-6 relative (cosine difference ~1e-12); the limit 1e-10 flags a systematic
// drift that the per-element bound alone could let through.
void check_cpu_fp32(const Shape& sh, uint64_t seed) {
  const Problem pr = make_problem(sh, seed);
  const Reference ref = reference(pr);
  const Output got = run_cpu_fp32(pr);
  expect_matches(pr, ref, got, {}, 1e-10, "cpu fp32");
}

// ---- CPU twin ------------------------------------------------------------------------------
TEST(MlaDecodeCpu, SmallDimsRaggedBatch) {
  ThreadCount threads(2);
  uint64_t seed = 10;
  for (int64_t S_q : {1, 2, 4})
    for (int64_t bs : {16, 64})
      check_cpu_fp32({S_q, 3, 24, 16, bs, {37, 1 + static_cast<int32_t>(S_q), 130, 64, 200}}, seed++);
}

TEST(MlaDecodeCpu, RealisticDims) {
  ThreadCount threads(2);
  check_cpu_fp32({1, 16, 576, 512, 64, {1, 200, 333}}, 20);
  check_cpu_fp32({2, 16, 576, 512, 16, {70, 129}}, 21);
  check_cpu_fp32({4, 16, 576, 512, 64, {90}}, 22);
}

// Rows not a multiple of the 16-row block, widths not a multiple of the 8-lane vectors, and
// D_v == D_qk: every tail path of the micro-kernels.
TEST(MlaDecodeCpu, OddWidths) {
  ThreadCount threads(2);
  check_cpu_fp32({1, 5, 7, 5, 16, {1, 77}}, 30);
  check_cpu_fp32({2, 3, 13, 13, 16, {40, 3}}, 31);
  check_cpu_fp32({1, 1, 1, 1, 16, {5, 20}}, 32);
  check_cpu_fp32({3, 7, 40, 21, 32, {100}}, 33);
}

TEST(MlaDecodeCpu, ManyHeads) {
  ThreadCount threads(2);
  check_cpu_fp32({2, 128, 64, 40, 64, {150, 9}}, 40);
}

// Queries with nothing to attend (L_b - S_q + s < 0, including L_b == 0) give 0 and -inf.
TEST(MlaDecodeCpu, EmptyAndShorterThanQueries) {
  ThreadCount threads(2);
  const Shape sh{4, 3, 24, 16, 16, {0, 1, 2, 3, 4, 0}};
  const Problem pr = make_problem(sh, 50);
  const Reference ref = reference(pr);
  const Output got = run_cpu_fp32(pr);
  expect_matches(pr, ref, got, {}, 1e-10, "cpu fp32");
  const int64_t S_q = sh.S_q, H = sh.H, Dv = sh.D_v;
  auto out_at = [&](int64_t b, int64_t s, int64_t h) { return &got.out[((b * S_q + s) * H + h) * Dv]; };
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t s = 0; s < S_q; ++s) {  // sequence 0 is empty
      EXPECT_EQ(got.lse[h * S_q + s], -std::numeric_limits<float>::infinity());
      for (int64_t c = 0; c < Dv; ++c) EXPECT_EQ(out_at(0, s, h)[c], 0.0f);
    }
    // Sequence 1 holds one row: only its last query sees it, with weight exactly 1.
    const float* row0 = &pr.cache[pr.block_table[1 * pr.max_blocks] * sh.block_size * sh.D_qk];
    for (int64_t c = 0; c < Dv; ++c) EXPECT_EQ(out_at(1, S_q - 1, h)[c], row0[c]);
  }
}

// Long contexts with few sequences take the split-KV path (chunks merged by max and sum),
// including a batch where some sequences split and others do not.
TEST(MlaDecodeCpu, SplitKv) {
  ThreadCount threads(4);
  check_cpu_fp32({1, 16, 576, 512, 64, {3000}}, 60);
  check_cpu_fp32({2, 16, 576, 512, 64, {1500}}, 61);
  check_cpu_fp32({2, 3, 24, 16, 16, {2000, 50, 700}}, 62);
  check_cpu_fp32({4, 5, 24, 24, 16, {8000}}, 63);
}

TEST(MlaDecodeCpu, SplitKvMatchesSingleThread) {
  const Problem pr = make_problem({1, 16, 576, 512, 64, {2500}}, 70);
  Output one, four;
  {
    ThreadCount threads(1);
    one = run_cpu_fp32(pr);
  }
  {
    ThreadCount threads(4);
    four = run_cpu_fp32(pr);
  }
  // Different merge orders, both fp32: the bound of the reference test applies to each.
  const Reference ref = reference(pr);
  expect_matches(pr, ref, one, {}, 1e-10, "cpu fp32 1 thread");
  expect_matches(pr, ref, four, {}, 1e-10, "cpu fp32 4 threads");
}

// bf16 storage: inputs are exactly bf16, arithmetic is fp32, out is rounded to bf16 (half an
// ulp: 2^-8 relative, taken with a factor 2); the cosine limit is FlashMLA's 1e-5.
TEST(MlaDecodeCpu, Bf16Storage) {
  ThreadCount threads(2);
  const std::vector<Shape> shapes = {{1, 16, 576, 512, 64, {1, 300, 77}}, {2, 3, 24, 16, 16, {45, 1, 0}}};
  uint64_t seed = 80;
  for (const Shape& sh : shapes) {
    const Problem pr = make_problem(sh, seed++, bf16_round);
    const Reference ref = reference(pr);
    const Output got = run_cpu_bf16(pr);
    expect_matches(pr, ref, got, {0.0, std::ldexp(1.0, -7)}, 1e-5, "cpu bf16");
  }
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
Shape nonfinite_shape(int64_t H, int64_t D_qk, int64_t D_v, int64_t block_size, int32_t L) {
  return {2, H, D_qk, D_v, block_size, {L, L, L, L, L, 1, 0}};
}

Problem make_nonfinite_problem(const Shape& sh, uint64_t seed, float (*round)(float) = nullptr) {
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
void expect_matches_nonfinite(const Problem& pr, const Reference& ref, const Output& got, Rounding rounding,
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
void expect_nonfinite_rules(const Problem& pr, const Output& got, const std::string& what) {
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

TEST(MlaDecodeCpu, NonFiniteInputsFollowTheReference) {
  for (int threads : {1, 4}) {  // 4: the long shape splits into chunks that are merged
    ThreadCount tc(threads);
    uint64_t seed = 200;
    for (const Shape& sh : {nonfinite_shape(3, 24, 16, 16, 40), nonfinite_shape(16, 576, 512, 64, 700)}) {
      const Problem pr = make_nonfinite_problem(sh, seed++);
      const Reference ref = reference(pr);
      const std::string what = "cpu fp32 threads=" + std::to_string(threads);
      const Output got = run_cpu_fp32(pr);
      expect_matches_nonfinite(pr, ref, got, {}, 1e-10, what);
      expect_nonfinite_rules(pr, got, what + " " + describe(sh));
      const Problem pr16 = make_nonfinite_problem(sh, seed++, bf16_round);
      const Output got16 = run_cpu_bf16(pr16);
      expect_matches_nonfinite(pr16, reference(pr16), got16, {0.0, std::ldexp(1.0, -7)}, 1e-5, "cpu bf16");
      expect_nonfinite_rules(pr16, got16, "cpu bf16 threads=" + std::to_string(threads) + " " + describe(sh));
    }
  }
}

#if defined(TINYSEEK_WITH_CUDA)
// ---- CUDA kernel (runs where a device exists) ----------------------------------------------
// fp16: test data lies in fp16's normal range, so rounding is a quantum of 2^(e-10).
float fp16_round(float x) {
  if (std::isnan(x) || x == 0.0f) return x;
  const double q = std::ldexp(1.0, std::ilogb(x) - 10);
  return static_cast<float>(std::nearbyint(x / q) * q);  // ties to even
}
uint16_t fp16_bits(float x) {
  if (std::isnan(x)) return 0x7e00;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (x == 0.0f) return sign;
  const int e = std::ilogb(x);
  const auto mant = static_cast<uint16_t>(std::lround(std::ldexp(std::fabs(x), 10 - e)) - 1024);
  return static_cast<uint16_t>(sign | ((e + 15) << 10) | mant);
}
float fp16_value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const float sign = (h & 0x8000) ? -1.0f : 1.0f;
  if (e == 31) return m ? std::nanf("") : sign * std::numeric_limits<float>::infinity();
  if (e == 0) return sign * std::ldexp(static_cast<float>(m), -24);
  return sign * std::ldexp(static_cast<float>(m + 1024), e - 25);
}

bool cuda_device_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

template <class V>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n_ > 0) TS_CUDA_CHECK(cudaMalloc(&ptr_, n_ * sizeof(V)));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }
  V* get() const { return ptr_; }
  void upload(const std::vector<V>& v) {
    TS_CUDA_CHECK(cudaMemcpy(ptr_, v.data(), n_ * sizeof(V), cudaMemcpyHostToDevice));
  }
  std::vector<V> download() const {
    std::vector<V> v(n_);
    TS_CUDA_CHECK(cudaMemcpy(v.data(), ptr_, n_ * sizeof(V), cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  size_t n_;
  V* ptr_ = nullptr;
};

Output run_cuda(const Problem& pr, MlaDtype dtype, int num_splits) {
  uint16_t (*to_bits)(float) = dtype == MlaDtype::kBFloat16 ? bf16_bits : fp16_bits;
  float (*to_value)(uint16_t) = dtype == MlaDtype::kBFloat16 ? bf16_value : fp16_value;
  std::vector<uint16_t> q(pr.q.size()), cache(pr.cache.size());
  std::transform(pr.q.begin(), pr.q.end(), q.begin(), to_bits);
  std::transform(pr.cache.begin(), pr.cache.end(), cache.begin(), to_bits);
  const size_t n_out = pr.B * pr.sh.S_q * pr.sh.H * pr.sh.D_v, n_lse = pr.B * pr.sh.H * pr.sh.S_q;
  DeviceBuffer<uint16_t> q_d(q.size()), cache_d(cache.size()), out_d(n_out);
  DeviceBuffer<int32_t> table_d(pr.block_table.size()), lens_d(pr.sh.seq_lens.size());
  DeviceBuffer<float> lse_d(n_lse);
  q_d.upload(q);
  cache_d.upload(cache);
  table_d.upload(pr.block_table);
  lens_d.upload(pr.sh.seq_lens);
  out_d.upload(std::vector<uint16_t>(n_out, to_bits(std::nanf(""))));
  lse_d.upload(ts::test::poisoned(n_lse));

  MlaDecodeParams p = params_for(pr);
  p.q = q_d.get();
  p.kv_cache = cache_d.get();
  p.block_table = table_d.get();
  p.seq_lens = lens_d.get();
  p.out = out_d.get();
  p.lse = lse_d.get();
  p.dtype = dtype;
  p.num_splits = num_splits;
  DeviceBuffer<float> ws_d(mla_decode_cuda_workspace_bytes(p) / sizeof(float));
  p.workspace = ws_d.get();
  mla_decode_cuda(p, nullptr);
  TS_CUDA_CHECK(cudaDeviceSynchronize());

  Output r{std::vector<float>(n_out), lse_d.download()};
  const std::vector<uint16_t> out = out_d.download();
  std::transform(out.begin(), out.end(), r.out.begin(), to_value);
  return r;
}

// The kernel feeds P rounded to the input dtype to its PV product (half an ulp: relative 2^-8
// for bf16, 2^-11 for fp16 per weight; the weights sum to 1 and values are bounded by 1, so
// that much absolute on out) and rounds out to it (the same, relative); each is taken with a
// factor 2, giving r. The cosine difference is sum (x - y)^2 / sum (x^2 + y^2) <= r^2 / 2 for
// relative errors up to r; the limit r^2 keeps a factor 2 (bf16: 6e-5; FlashMLA's 1e-5 is met
// by realistic shapes but not by D_v = 1, where two rounded numbers make up the whole output).
void check_cuda(const Shape& sh, uint64_t seed, int num_splits) {
  for (MlaDtype dtype : {MlaDtype::kBFloat16, MlaDtype::kFloat16}) {
    const bool bf16 = dtype == MlaDtype::kBFloat16;
    const Problem pr = make_problem(sh, seed, bf16 ? bf16_round : fp16_round);
    const Reference ref = reference(pr);
    const Output got = run_cuda(pr, dtype, num_splits);
    const double r = std::ldexp(1.0, bf16 ? -7 : -10);
    expect_matches(pr, ref, got, {r, r}, r * r,
                   std::string("cuda ") + (bf16 ? "bf16" : "fp16") + " splits=" + std::to_string(num_splits));
  }
}

TEST(MlaDecodeCuda, MatchesReference) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device";
  const Shape realistic{1, 16, 576, 512, 64, {1, 200, 333, 4097}};
  check_cuda(realistic, 90, 0);  // splits chosen from the SM count
  check_cuda(realistic, 91, 1);  // one split: out written directly
  check_cuda(realistic, 92, 7);
  check_cuda({2, 3, 24, 16, 16, {37, 3, 130, 0, 1}}, 93, 0);  // D_qk padded to the k16 step
  check_cuda({4, 3, 24, 16, 16, {2, 9}}, 94, 3);              // queries with nothing to attend
  check_cuda({2, 128, 576, 512, 64, {300, 5}}, 95, 0);        // many 32-row groups
  check_cuda({1, 5, 600, 520, 32, {150}}, 96, 2);             // D_v > 512: two column chunks
  check_cuda({1, 1, 8, 1, 16, {40, 17}}, 97, 0);              // narrowest widths
}

// The non-finite cases of MlaDecodeCpu.NonFiniteInputsFollowTheReference, with one split (out
// written by the split kernel) and several (the combine kernel merges them; with L = 100 and 3
// splits the last split of a sequence is empty).
TEST(MlaDecodeCuda, NonFiniteInputsFollowTheReference) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device";
  uint64_t seed = 300;
  for (const Shape& sh : {nonfinite_shape(3, 24, 16, 16, 100), nonfinite_shape(16, 576, 512, 64, 700)})
    for (int num_splits : {1, 3, 0})
      for (MlaDtype dtype : {MlaDtype::kBFloat16, MlaDtype::kFloat16}) {
        const bool bf16 = dtype == MlaDtype::kBFloat16;
        const Problem pr = make_nonfinite_problem(sh, seed++, bf16 ? bf16_round : fp16_round);
        const Output got = run_cuda(pr, dtype, num_splits);
        const std::string what =
            std::string("cuda ") + (bf16 ? "bf16" : "fp16") + " splits=" + std::to_string(num_splits);
        const double r = std::ldexp(1.0, bf16 ? -7 : -10);
        expect_matches_nonfinite(pr, reference(pr), got, {r, r}, r * r, what);
        expect_nonfinite_rules(pr, got, what + " " + describe(sh));
      }
}

TEST(MlaDecodeCuda, RejectsUnsupportedShapes) {
  const Problem pr = make_problem({1, 2, 13, 8, 16, {5}}, 98);
  MlaDecodeParams p = params_for(pr);
  p.dtype = MlaDtype::kBFloat16;
  EXPECT_THROW(mla_decode_cuda(p, nullptr), std::invalid_argument);  // D_qk % 8 != 0
  p.D_qk = 16;
  p.dtype = MlaDtype::kFloat32;
  EXPECT_THROW(mla_decode_cuda(p, nullptr), std::invalid_argument);  // fp32 is the CPU's dtype
}
#endif

}  // namespace
}  // namespace ts::kern
