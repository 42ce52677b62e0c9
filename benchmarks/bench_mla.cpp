// MLA decode on CPU (one new token per sequence, V3's latent dims: d_c = 512, d_R = 64, per-head
// nope/value dims 128, H = 16 query heads, B = 2 sequences, fp32, paged cache of 64-row blocks),
// at contexts 512 .. 8192. Every impl computes one decode step of attention for the same inputs:
//   mla_decode/tinyseek              absorbed: q^C W_UK folded into the query, MQA over the latent
//                                    cache by torch.ops.tinyseek.mla_decode, W_UV applied after
//   mla_decode/base:sdpa_decompress  decompress every cached latent into per-head K and V
//                                    (W_UK c, W_UV c), then torch's scaled_dot_product_attention
//   mla_decode/mha_sdpa              MHA decode at the same width (16 heads of 128): SDPA over a
//                                    cache of K and V, 2 * 16 * 128 values per token
// Counter cache_bytes_per_s: bytes of the KV cache the impl must read per second (latent rows
// for MLA, K and V for MHA). memcpy/base:memcpy/<MiB> measures this machine's copy bandwidth
// (rw_bytes_per_s counts the read and the write) for comparison.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "csrc/ops/mla_decode.h"

namespace {

constexpr int64_t kB = 2, kH = 16, kDc = 512, kDr = 64, kDn = 128, kDv = 128, kBlock = 64;

struct Inputs {
  torch::Tensor cache;         // [NB, 64, 1, d_c + d_R], blocks of each sequence in order
  torch::Tensor table, lens;   // [B, MB] int32, [B] int32
  torch::Tensor w_uk, w_uv;    // [H, d_n, d_c], [H, d_v, d_c]
  torch::Tensor q_nope, q_pe;  // [B, 1, H, d_n], [B, 1, H, d_R]
  double scale;
};

Inputs make_inputs(int64_t L) {
  torch::manual_seed(0);
  const int64_t mb = (L + kBlock - 1) / kBlock;
  Inputs in;
  in.cache = torch::randn({kB * mb, kBlock, 1, kDc + kDr});
  in.table = torch::arange(kB * mb, torch::kInt32).view({kB, mb});
  in.lens = torch::full({kB}, L, torch::kInt32);
  in.w_uk = torch::randn({kH, kDn, kDc}) / 23.0;
  in.w_uv = torch::randn({kH, kDv, kDc}) / 23.0;
  in.q_nope = torch::randn({kB, 1, kH, kDn});
  in.q_pe = torch::randn({kB, 1, kH, kDr});
  in.scale = 1.0 / std::sqrt(static_cast<double>(kDn + kDr));
  return in;
}

void absorbed(benchmark::State& state, int64_t L) {
  auto in = make_inputs(L);
  for (auto _ : state) {
    auto q = torch::cat({torch::einsum("bshd,hdc->bshc", {in.q_nope, in.w_uk}), in.q_pe}, -1);
    auto [out, lse] = ts::ops::mla_decode(q, in.cache, in.table, in.lens, kDc, in.scale);
    auto o = torch::einsum("bshc,hvc->bshv", {out, in.w_uv});
    benchmark::DoNotOptimize(o.data_ptr());
  }
  const double bytes = static_cast<double>(kB * L * (kDc + kDr) * sizeof(float));
  state.counters["cache_bytes_per_s"] = benchmark::Counter(bytes * state.iterations(), benchmark::Counter::kIsRate);
}

void decompress(benchmark::State& state, int64_t L) {
  auto in = make_inputs(L);
  // The baseline reads the same latent rows as one contiguous [B, L, d_c + d_R] view (no paging
  // cost charged to it).
  auto rows = in.cache.view({kB, -1, kDc + kDr}).narrow(1, 0, L);
  auto q = torch::cat({in.q_nope, in.q_pe}, -1).transpose(1, 2);  // [B, H, 1, d_n + d_R]
  for (auto _ : state) {
    auto c = rows.narrow(-1, 0, kDc);
    auto k_nope = torch::einsum("blc,hdc->bhld", {c, in.w_uk});  // [B, H, L, d_n]
    auto v = torch::einsum("blc,hdc->bhld", {c, in.w_uv});       // [B, H, L, d_v]
    auto k_pe = rows.narrow(-1, kDc, kDr).unsqueeze(1).expand({kB, kH, L, kDr});
    auto o = at::scaled_dot_product_attention(q, torch::cat({k_nope, k_pe}, -1), v, {}, 0.0, false, in.scale);
    benchmark::DoNotOptimize(o.data_ptr());
  }
  const double bytes = static_cast<double>(kB * L * (kDc + kDr) * sizeof(float));
  state.counters["cache_bytes_per_s"] = benchmark::Counter(bytes * state.iterations(), benchmark::Counter::kIsRate);
}

void mha(benchmark::State& state, int64_t L) {
  torch::manual_seed(0);
  auto k = torch::randn({kB, kH, L, kDv}), v = torch::randn({kB, kH, L, kDv});
  auto q = torch::randn({kB, kH, 1, kDv});
  for (auto _ : state) {
    auto o = at::scaled_dot_product_attention(q, k, v);
    benchmark::DoNotOptimize(o.data_ptr());
  }
  const double bytes = static_cast<double>(2 * kB * kH * L * kDv * sizeof(float));
  state.counters["cache_bytes_per_s"] = benchmark::Counter(bytes * state.iterations(), benchmark::Counter::kIsRate);
}

void copy(benchmark::State& state, int64_t mib) {
  const size_t n = static_cast<size_t>(mib) << 20;
  std::vector<char> src(n, 1), dst(n, 0);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.counters["copy_bytes_per_s"] =
      benchmark::Counter(static_cast<double>(n) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["rw_bytes_per_s"] = benchmark::Counter(2.0 * n * state.iterations(), benchmark::Counter::kIsRate);
}

void register_all() {
  for (int64_t L : {512, 1024, 2048, 4096, 8192}) {
    const std::string args = fmt::format("/{}", L);
    benchmark::RegisterBenchmark(("mla_decode/tinyseek" + args).c_str(), [=](benchmark::State& s) { absorbed(s, L); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("mla_decode/base:sdpa_decompress" + args).c_str(),
                                 [=](benchmark::State& s) { decompress(s, L); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("mla_decode/mha_sdpa" + args).c_str(), [=](benchmark::State& s) { mha(s, L); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("memcpy/base:memcpy/64", [](benchmark::State& s) { copy(s, 64); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}
const int registered = (register_all(), 0);

}  // namespace
