// MoE CUDA kernels against their CPU twins (kernels/moe.h). Runs only where a CUDA device exists;
// elsewhere every test reports itself skipped. The routing build must match bitwise; permute is a
// copy and must match bitwise; sums and GEMMs match within twice the fp32 bound of the float64
// references in test_moe*.cpp, plus bf16's relative rounding of the output for bf16 storage.
#if defined(TINYSEEK_WITH_CUDA)

#include <cuda_runtime_api.h>
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

constexpr double kU = 0x1p-24;     // fp32 unit roundoff
constexpr double kBf16U = 0x1p-8;  // bf16 unit roundoff (8 significant bits)

bool has_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define MOE_SKIP_WITHOUT_GPU() \
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device"

#define MOE_CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

// A device buffer of `bytes` bytes (at least 1, so empty tensors still get a valid pointer).
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) { EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(n, 1)), cudaSuccess); }
  template <class V>
  explicit DeviceBuffer(const std::vector<V>& host) : DeviceBuffer(host.size() * sizeof(V)) {
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class V>
  V* as() const {
    return static_cast<V*>(ptr);
  }
  template <class V>
  std::vector<V> download() const {
    std::vector<V> host(bytes / sizeof(V));
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
  // Fill with NaN (0xFF bytes are a NaN in fp32 and in bf16), so unwritten elements show.
  void poison() { EXPECT_EQ(cudaMemset(ptr, 0xff, bytes), cudaSuccess); }
};

uint16_t bf16_bits(float f) {  // round to nearest even (finite inputs)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float bf16_value(uint16_t b) {
  const uint32_t u = uint32_t{b} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Host values in the storage dtype: bf16 rounds (and `values` are replaced by the rounded ones, so
// the CPU twin sees exactly what the GPU sees); fp32 is copied.
std::vector<uint8_t> to_storage(std::vector<float>& values, bool bf16) {
  std::vector<uint8_t> bytes(values.size() * (bf16 ? 2 : 4));
  for (size_t i = 0; i < values.size(); ++i) {
    if (bf16) {
      const uint16_t b = bf16_bits(values[i]);
      values[i] = bf16_value(b);
      std::memcpy(bytes.data() + 2 * i, &b, 2);
    } else {
      std::memcpy(bytes.data() + 4 * i, &values[i], 4);
    }
  }
  return bytes;
}
std::vector<float> from_storage(const DeviceBuffer& d, bool bf16) {
  const auto bytes = d.download<uint8_t>();
  std::vector<float> out(bytes.size() / (bf16 ? 2 : 4));
  for (size_t i = 0; i < out.size(); ++i) {
    if (bf16) {
      uint16_t b;
      std::memcpy(&b, bytes.data() + 2 * i, 2);
      out[i] = bf16_value(b);
    } else {
      std::memcpy(&out[i], bytes.data() + 4 * i, 4);
    }
  }
  return out;
}

std::vector<int64_t> random_topk_ids(int64_t T, int64_t K, int64_t E, uint64_t seed) {
  std::vector<int64_t> experts(E), ids(T * K);
  std::iota(experts.begin(), experts.end(), 0);
  std::mt19937_64 gen(seed);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      std::swap(experts[k], experts[std::uniform_int_distribution<int64_t>(k, E - 1)(gen)]);
      ids[t * K + k] = experts[k];
    }
  return ids;
}

struct HostRouting {
  std::vector<int64_t> offsets, sorted_to_token, token_to_sorted;
};

HostRouting cpu_routing(const std::vector<int64_t>& ids, int64_t T, int64_t K, int64_t E) {
  HostRouting r{std::vector<int64_t>(E + 1), std::vector<int64_t>(T * K), std::vector<int64_t>(T * K)};
  const auto st = ts::kern::moe_routing_cpu(
      {ids.data(), r.offsets.data(), r.sorted_to_token.data(), r.token_to_sorted.data(), T, K, E});
  EXPECT_TRUE(st.ok);
  return r;
}

// Runs the GPU routing; returns {offsets, sorted_to_token, token_to_sorted, error[2]}.
std::vector<std::vector<int64_t>> gpu_routing(const std::vector<int64_t>& ids, int64_t T, int64_t K, int64_t E) {
  DeviceBuffer d_ids(ids), off((E + 1) * 8), s2t(T * K * 8), t2s(T * K * 8), err(16);
  off.poison();
  s2t.poison();
  t2s.poison();
  DeviceBuffer ws(ts::kern::moe_routing_cuda_workspace(T, K, E));
  ts::kern::moe_routing_cuda({d_ids.as<int64_t>(), off.as<int64_t>(), s2t.as<int64_t>(), t2s.as<int64_t>(), T, K, E},
                             err.as<int64_t>(), ws.ptr, static_cast<int64_t>(ws.bytes), nullptr);
  return {off.download<int64_t>(), s2t.download<int64_t>(), t2s.download<int64_t>(), err.download<int64_t>()};
}

TEST(MoeCuda, RoutingBitwiseEqualsCpu) {
  MOE_SKIP_WITHOUT_GPU();
  struct S {
    int64_t T, K, E;
  };
  for (S s : {S{257, 8, 64}, S{1000, 2, 16}, S{37, 1, 5}, S{0, 4, 6}, S{6000, 6, 160}, S{300, 2, 1000}}) {
    SCOPED_TRACE(testing::Message() << "T=" << s.T << " K=" << s.K << " E=" << s.E);
    const auto ids = random_topk_ids(s.T, s.K, s.E, 100 + s.T);  // E=1000 >> T*K: most experts empty
    const HostRouting want = cpu_routing(ids, s.T, s.K, s.E);
    const auto got = gpu_routing(ids, s.T, s.K, s.E);
    EXPECT_EQ(got[0], want.offsets);
    EXPECT_EQ(got[1], want.sorted_to_token);
    EXPECT_EQ(got[2], want.token_to_sorted);
    EXPECT_EQ(got[3][0], -1);
  }
}

TEST(MoeCuda, RoutingReportsFirstBadSlot) {
  MOE_SKIP_WITHOUT_GPU();
  const int64_t T = 5000, K = 4, E = 32;
  auto ids = random_topk_ids(T, K, E, 7);
  ids[4999 * K + 3] = -5;
  ids[1234 * K + 2] = E;
  const auto got = gpu_routing(ids, T, K, E);
  EXPECT_EQ(got[3][0], 1234 * K + 2);
  EXPECT_EQ(got[3][1], E);
}

struct RowShape {
  int64_t T, K, E, H;
};

// Permute, unpermute and both backward pieces on the GPU vs the CPU twin, fp32 and bf16 storage;
// H = 33 takes the single-element path, the others the 16-byte path.
TEST(MoeCuda, PermuteUnpermuteMatchCpu) {
  MOE_SKIP_WITHOUT_GPU();
  for (bool bf16 : {false, true}) {
    for (RowShape s : {RowShape{64, 8, 16, 96}, RowShape{129, 1, 7, 33}, RowShape{50, 3, 9, 8}}) {
      SCOPED_TRACE(testing::Message() << (bf16 ? "bf16" : "fp32") << " T=" << s.T << " K=" << s.K << " H=" << s.H);
      const int64_t T = s.T, K = s.K, H = s.H, M = T * K, elt = bf16 ? 2 : 4;
      const auto ids = random_topk_ids(T, K, s.E, 3 + H);
      const HostRouting rt = cpu_routing(ids, T, K, s.E);
      auto x = ts::test::random_vector(T * H, 1), ys = ts::test::random_vector(M * H, 2);
      auto gy = ts::test::random_vector(T * H, 3);
      const auto w = ts::test::random_vector(M, 4);
      DeviceBuffer d_x(to_storage(x, bf16)), d_ys(to_storage(ys, bf16)), d_gy(to_storage(gy, bf16));
      DeviceBuffer d_w(w), d_s2t(rt.sorted_to_token), d_t2s(rt.token_to_sorted);
      DeviceBuffer d_xs(M * H * elt), d_y(T * H * elt), d_gx(T * H * elt), d_gys(M * H * elt), d_gw(M * 4);
      for (DeviceBuffer* b : {&d_xs, &d_y, &d_gx, &d_gys, &d_gw}) b->poison();

      ts::kern::moe_permute_cuda({d_x.ptr, d_s2t.as<int64_t>(), d_xs.ptr, T, K, H, bf16}, nullptr);
      ts::kern::moe_unpermute_cuda({d_ys.ptr, d_t2s.as<int64_t>(), d_w.as<float>(), d_y.ptr, T, K, H, bf16}, nullptr);
      ts::kern::moe_permute_backward_cuda({d_ys.ptr, d_t2s.as<int64_t>(), d_gx.ptr, T, K, H, bf16}, nullptr);
      ts::kern::moe_unpermute_backward_cuda(
          {d_gy.ptr, d_ys.ptr, d_t2s.as<int64_t>(), d_w.as<float>(), d_gys.ptr, d_gw.as<float>(), T, K, H, bf16},
          nullptr);

      std::vector<float> xs(M * H), y(T * H), gx(T * H), gys(M * H), gw(M);
      ts::kern::moe_permute_cpu({x.data(), rt.sorted_to_token.data(), xs.data(), T, K, H});
      ts::kern::moe_unpermute_cpu({ys.data(), rt.token_to_sorted.data(), w.data(), y.data(), T, K, H});
      ts::kern::moe_permute_backward_cpu({ys.data(), rt.token_to_sorted.data(), gx.data(), T, K, H});
      ts::kern::moe_unpermute_backward_cpu(
          {gy.data(), ys.data(), rt.token_to_sorted.data(), w.data(), gys.data(), gw.data(), T, K, H});

      EXPECT_EQ(from_storage(d_xs, bf16), xs);  // a copy: bitwise
      // |values| <= 1 and |w| <= 1, so K-term sums are below K and H-term dots below H.
      const double out_rtol = bf16 ? kBf16U : 0.0;
      TS_EXPECT_CLOSE(from_storage(d_y, bf16).data(), y.data(), T * H, 2 * K * kU * K, out_rtol);
      TS_EXPECT_CLOSE(from_storage(d_gx, bf16).data(), gx.data(), T * H, 2 * K * kU * K, out_rtol);
      TS_EXPECT_CLOSE(from_storage(d_gys, bf16).data(), gys.data(), M * H, 0.0, out_rtol + kU);
      TS_EXPECT_CLOSE(d_gw.download<float>().data(), gw.data(), M, 2 * H * kU * H, 0.0);
    }
  }
}

TEST(MoeCuda, GroupedGemmMatchesCpu) {
  MOE_SKIP_WITHOUT_GPU();
  struct C {
    std::vector<int64_t> counts;
    int64_t N, H;
  };
  for (bool bf16 : {false, true}) {
    for (const C& c :
         {C{{64, 64, 64, 64}, 48, 80}, C{{0, 300, 5, 0, 77, 1, 0, 129}, 33, 70}, C{{0, 700, 0}, 130, 24}}) {
      SCOPED_TRACE(testing::Message() << (bf16 ? "bf16" : "fp32") << " E=" << c.counts.size() << " N=" << c.N);
      std::vector<int64_t> off(c.counts.size() + 1, 0);
      for (size_t e = 0; e < c.counts.size(); ++e) off[e + 1] = off[e] + c.counts[e];
      const int64_t E = c.counts.size(), M = off[E], N = c.N, H = c.H, elt = bf16 ? 2 : 4;
      auto x = ts::test::random_vector(M * H, 5), w = ts::test::random_vector(E * N * H, 6);
      auto go = ts::test::random_vector(M * N, 7);
      DeviceBuffer d_x(to_storage(x, bf16)), d_w(to_storage(w, bf16)), d_go(to_storage(go, bf16)), d_off(off);
      DeviceBuffer d_out(M * N * elt), d_gx(M * H * elt), d_gw(E * N * H * elt);
      for (DeviceBuffer* b : {&d_out, &d_gx, &d_gw}) b->poison();
      ts::kern::moe_grouped_gemm_cuda({d_x.ptr, d_w.ptr, d_off.as<int64_t>(), d_out.ptr, M, N, H, E, bf16}, nullptr);
      ts::kern::moe_grouped_gemm_backward_cuda(
          {d_go.ptr, d_x.ptr, d_w.ptr, d_off.as<int64_t>(), d_gx.ptr, d_gw.ptr, M, N, H, E, bf16}, nullptr);

      std::vector<float> out(M * N), gx(M * H), gw(E * N * H);
      ts::kern::moe_grouped_gemm_cpu({x.data(), w.data(), off.data(), out.data(), M, N, H, E});
      ts::kern::moe_grouped_gemm_backward_cpu(
          {go.data(), x.data(), w.data(), off.data(), gx.data(), gw.data(), M, N, H, E});
      const int64_t max_rows = *std::max_element(c.counts.begin(), c.counts.end());
      const double out_rtol = bf16 ? kBf16U : 0.0;
      // Inputs in [-1, 1]: a depth-d dot has sum|a b| <= d, so each side is within d^2 u of exact.
      TS_EXPECT_CLOSE(from_storage(d_out, bf16).data(), out.data(), M * N, 2.0 * H * H * kU, out_rtol);
      TS_EXPECT_CLOSE(from_storage(d_gx, bf16).data(), gx.data(), M * H, 2.0 * N * N * kU, out_rtol);
      TS_EXPECT_CLOSE(from_storage(d_gw, bf16).data(), gw.data(), E * N * H, 2.0 * max_rows * max_rows * kU, out_rtol);
    }
  }
}

}  // namespace

#endif  // TINYSEEK_WITH_CUDA
