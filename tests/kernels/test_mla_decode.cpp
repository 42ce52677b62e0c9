// MLA decode (kernels/mla_decode.h): the CPU twin against a float64 gather + softmax reference
// (tests/kernels/mla_decode_problem.h builds the problems; outputs are NaN-poisoned before a run).
// The CUDA kernel's tests are in test_mla_decode_cuda.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/kernels/mla_decode_problem.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ts::kern {
namespace {

using namespace mla_test;  // the shared problems, reference and tolerances

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

}  // namespace
}  // namespace ts::kern
