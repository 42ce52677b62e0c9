// CUDA FP8 kernels against their CPU twins (quantize / dequantize: bit for bit) and the GEMM
// against the float64 product of the dequantized operands. Skipped where no GPU exists.
#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "kernels/common.h"
#include "kernels/fp8.h"
#include "tests/kernels/compare.h"
#include "tests/kernels/test_fp8_util.h"

namespace {

namespace ref = ts::test::fp8;
using ts::kern::ceil_div;

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

int compute_capability() {
  int dev = 0, major = 0, minor = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  return major * 10 + minor;
}

#define TS_SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

void check(cudaError_t e) {
  if (e != cudaSuccess) throw std::runtime_error(cudaGetErrorString(e));
}

// A device copy of a host vector; to_host() copies back after synchronizing.
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<T>& host) : n(host.size()) {
    check(cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(n, 1) * sizeof(T)));
    check(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<T> to_host() const {
    check(cudaDeviceSynchronize());
    std::vector<T> host(n);
    check(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

template <class T>
void expect_same_bits(const std::vector<T>& got, const std::vector<T>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0 && ++bad <= 3)
      ADD_FAILURE() << what << ": index " << i << " got " << double(got[i]) << " want " << double(want[i]);
  EXPECT_EQ(bad, 0) << what;
}

// Outliers, a NaN and (optionally) an inf, so non-finite handling is compared too.
std::vector<float> test_data(int64_t n, uint64_t seed, bool with_inf) {
  auto v = ts::test::random_vector(n, seed, 2.0f);
  for (int64_t i = 0; i < n; i += 41) v[i] *= 300.0f;
  v[n / 3] = std::numeric_limits<float>::quiet_NaN();
  if (with_inf) v[n / 2] = -std::numeric_limits<float>::infinity();
  return v;
}

TEST(Fp8Cuda, QuantizeTilewiseAndDequantizeMatchCpuBitwise) {
  TS_SKIP_WITHOUT_GPU();
  for (auto [M, K, G] :
       {std::tuple<int64_t, int64_t, int64_t>{3, 200, 128}, {65, 333, 128}, {257, 1024, 128}, {9, 100, 32}})
    for (bool pow2 : {false, true}) {
      const int64_t KT = ceil_div(K, G);
      const auto x = test_data(M * K, M + K, true);
      auto q = ref::poisoned_codes(M * K);
      auto s = ts::test::poisoned(M * KT);
      ts::kern::fp8_quantize_tilewise_cpu({x.data(), q.data(), s.data(), M, K, G, pow2});
      DeviceBuffer<float> dx(x), ds(ts::test::poisoned(M * KT)), dout(ts::test::poisoned(M * K));
      DeviceBuffer<uint8_t> dq(ref::poisoned_codes(M * K));
      ts::kern::fp8_quantize_tilewise_cuda({dx.ptr, dq.ptr, ds.ptr, M, K, G, pow2}, nullptr);
      expect_same_bits(dq.to_host(), q, "tilewise codes");
      expect_same_bits(ds.to_host(), s, "tilewise scales");
      auto out = ts::test::poisoned(M * K);
      ts::kern::fp8_dequantize_cpu({q.data(), s.data(), out.data(), M, K, 1, G});
      ts::kern::fp8_dequantize_cuda({dq.ptr, ds.ptr, dout.ptr, M, K, 1, G}, nullptr);
      expect_same_bits(dout.to_host(), out, "dequantize 1xG");
    }
}

TEST(Fp8Cuda, QuantizeBlockwiseAndDequantizeMatchCpuBitwise) {
  TS_SKIP_WITHOUT_GPU();
  for (auto [N, K, B] : {std::tuple<int64_t, int64_t, int64_t>{200, 333, 128}, {384, 256, 128}, {7, 5, 4}})
    for (bool pow2 : {false, true}) {
      const int64_t NB = ceil_div(N, B), KB = ceil_div(K, B);
      const auto w = test_data(N * K, 3 * N + K, false);
      auto q = ref::poisoned_codes(N * K);
      auto s = ts::test::poisoned(NB * KB);
      ts::kern::fp8_quantize_blockwise_cpu({w.data(), q.data(), s.data(), N, K, B, pow2});
      DeviceBuffer<float> dw(w), ds(ts::test::poisoned(NB * KB)), dout(ts::test::poisoned(N * K));
      DeviceBuffer<uint8_t> dq(ref::poisoned_codes(N * K));
      ts::kern::fp8_quantize_blockwise_cuda({dw.ptr, dq.ptr, ds.ptr, N, K, B, pow2}, nullptr);
      expect_same_bits(dq.to_host(), q, "blockwise codes");
      expect_same_bits(ds.to_host(), s, "blockwise scales");
      auto out = ts::test::poisoned(N * K);
      ts::kern::fp8_dequantize_cpu({q.data(), s.data(), out.data(), N, K, B, B});
      ts::kern::fp8_dequantize_cuda({dq.ptr, ds.ptr, dout.ptr, N, K, B, B}, nullptr);
      expect_same_bits(dout.to_host(), out, "dequantize BxB");
    }
}

// Tolerance: each 128-slice is summed by the tensor core, whose accumulation keeps about 14
// significant bits on Hopper (V3 §3.3), i.e. an error of at most ~2^-13 of the slice's sum of
// |products| per mma step (4 per slice), then promoted in fp32. Summed over slices this is below
// 4 * 2^-13 = 2^-11 of sum_k |A B|; we allow 2^-10 (factor 2 of margin). The cosine-style
// difference bound is DeepGEMM's test bar tightened to what promotion achieves.
TEST(Fp8Cuda, GemmMatchesFloat64Reference) {
  TS_SKIP_WITHOUT_GPU();
  const bool fp8_mma = compute_capability() >= 89;
  for (auto [M, N, K, per_row] : {std::tuple<int64_t, int64_t, int64_t, bool>{1, 1, 16, false},
                                  {70, 200, 208, false},
                                  {256, 384, 1024, false},
                                  {33, 129, 4096, false},
                                  {70, 200, 208, true},
                                  {130, 257, 512, true}}) {
    const auto o = ref::make_operands(M, N, K, 7 * M + N + K, per_row);
    DeviceBuffer<uint8_t> da(o.a), db(o.b);
    DeviceBuffer<float> dsa(o.sa), dsb(o.sb), dout(ts::test::poisoned(M * N));
    DeviceBuffer<uint16_t> dbf(std::vector<uint16_t>(M * N, 0x7FC1));
    ts::kern::Fp8GemmParams p;
    p.a = da.ptr, p.a_scale = dsa.ptr, p.b = db.ptr, p.b_scale = dsb.ptr;
    p.out = dout.ptr, p.out_bf16 = dbf.ptr, p.m = M, p.n = N, p.k = K, p.b_scale_rows = o.R;
    if (!fp8_mma) {
      EXPECT_THROW(ts::kern::fp8_gemm_nt_cuda(p, nullptr), std::runtime_error);
      continue;
    }
    ts::kern::fp8_gemm_nt_cuda(p, nullptr);
    const auto got = dout.to_host();
    const auto bf = dbf.to_host();
    const auto want = ref::reference(o);
    for (int64_t i = 0; i < M * N; ++i) {
      ASSERT_LE(std::fabs(got[i] - want.out[i]), std::ldexp(want.abs[i], -10))
          << "M " << M << " N " << N << " K " << K << " per_row " << per_row << " index " << i << " got " << got[i]
          << " want " << want.out[i];
      ASSERT_EQ(bf[i], ts::kern::fp8_f32_to_bf16_bits(got[i])) << i;
    }
    const auto r = ts::test::compare(got.data(), want.out.data(), M * N, 1e30, 0.0, 1e-5);
    EXPECT_LE(r.cos_diff, 1e-5) << "M " << M << " N " << N << " K " << K;
  }
}

}  // namespace
#endif  // TINYSEEK_WITH_CUDA
