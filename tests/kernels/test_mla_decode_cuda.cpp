// MLA decode's CUDA kernel (kernels/mla_decode.h) against the float64 reference and the CPU twin's
// non-finite rules (tests/kernels/mla_decode_problem.h), bf16 and fp16, split-KV counts 1, 3 and
// automatic; every test skips where no GPU exists.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/kernels/mla_decode_problem.h"

#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime.h>

#include <stdexcept>

#include "kernels/cuda/cuda_check.cuh"

namespace ts::kern {
namespace {

using namespace mla_test;  // the shared problems, reference and tolerances

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

}  // namespace
}  // namespace ts::kern
#endif
