// MoE data movement and grouped GEMM (forward), each against its torch baseline:
//   moe_permute_unpermute/{tinyseek, base:torch}/T/H/E/K: moe_permute then moe_unpermute (weighted
//     combine) against the composition argsort(stable) + index_select + index_add_. Counter
//     bytes_per_s: the rows each side must move (x read, x_sorted written and read, y written).
//   grouped_gemm/{tinyseek, base:loop_matmul}/M/E/N/H: one grouped GEMM against a loop of one
//     matmul per expert into slices of the output; grouped_gemm_dense/{tinyseek, base:dense_mm}:
//     the same grouped GEMM against one dense [M, H] x [H, N] GEMM of the same FLOPs. Balanced load
//     (M/E rows per expert). Counter flop_per_s.
//   grouped_gemm_train/{tinyseek, base:loop_autograd}/M/E/N/H: forward + backward (grad_x, grad_w)
//     of the op under autograd against autograd through the per-expert loop of mm.
// Every case runs once untimed first (steady state, as in a training loop). Every side returns fresh
// output tensors; tinyseek's CPU ops take large ones from a cache of blocks freed by earlier calls
// (csrc/util/alloc.h), torch's CPU allocator hands blocks of 32 MiB and more back to the kernel, so
// its outputs pay first-touch page faults on every call. To compare the kernels alone, run with
// both sides on reused heap memory:
//   GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "csrc/ops/moe.h"

namespace {

void permute_unpermute(benchmark::State& state, int64_t T, int64_t H, int64_t E, int64_t K, bool fused) {
  torch::NoGradGuard ng;
  torch::manual_seed(0);
  auto x = torch::randn({T, H});
  auto ids = std::get<1>(torch::rand({T, E}).topk(K, -1));  // K distinct experts per token
  auto w = torch::rand({T, K});
  auto body = [&] {
    torch::Tensor y;
    if (fused) {
      auto [xs, s2t, offs] = ts::ops::moe_permute(x, ids, E);
      y = ts::ops::moe_unpermute(xs, s2t, w);  // the expert computation would sit between the two
    } else {
      auto flat = ids.flatten();
      auto order = std::get<1>(flat.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
      auto tok = torch::div(order, K, "floor");
      auto offs = torch::cat({torch::zeros({1}, torch::kLong), torch::bincount(flat, {}, E).cumsum(0)});
      auto xs = x.index_select(0, tok);
      y = torch::zeros({T, H}).index_add_(0, tok, xs * w.flatten().index_select(0, order).unsqueeze(1));
      benchmark::DoNotOptimize(offs.data_ptr());
    }
    benchmark::DoNotOptimize(y.data_ptr());
  };
  body();  // steady state: the largest cases run a single timed iteration
  for (auto _ : state) body();
  const double bytes = (T * H * 2.0 + 2.0 * T * K * H) * sizeof(float);
  state.counters["bytes_per_s"] = benchmark::Counter(bytes * state.iterations(), benchmark::Counter::kIsRate);
}

enum class Gemm { kGrouped, kLoop, kDense };

void grouped_gemm(benchmark::State& state, int64_t M, int64_t E, int64_t N, int64_t H, Gemm impl) {
  torch::NoGradGuard ng;
  torch::manual_seed(0);
  auto x = torch::randn({M, H});
  auto w = torch::randn({E, N, H});
  auto offs = torch::arange(E + 1, torch::kLong) * (M / E);
  offs[E] = M;
  auto w_dense = torch::randn({N, H});
  // Every side returns a fresh [M, N] tensor, as the op does (allocation and first touch included).
  auto body = [&] {
    if (impl == Gemm::kGrouped) {
      auto y = ts::ops::grouped_gemm(x, w, offs);
      benchmark::DoNotOptimize(y.data_ptr());
    } else if (impl == Gemm::kLoop) {
      auto out = torch::empty({M, N});
      const int64_t* o = offs.data_ptr<int64_t>();
      for (int64_t e = 0; e < E; ++e) {
        auto dst = out.narrow(0, o[e], o[e + 1] - o[e]);
        torch::mm_out(dst, x.narrow(0, o[e], o[e + 1] - o[e]), w[e].t());
      }
      benchmark::DoNotOptimize(out.data_ptr());
    } else {
      auto out = torch::mm(x, w_dense.t());
      benchmark::DoNotOptimize(out.data_ptr());
    }
  };
  body();
  for (auto _ : state) body();
  const double flops = 2.0 * M * N * H;
  state.counters["flop_per_s"] = benchmark::Counter(flops * state.iterations(), benchmark::Counter::kIsRate);
}

// Forward and backward (grad_x and grad_w from a given grad_out), as a training step runs them:
// the op under autograd against autograd through the per-expert loop of mm (slices cat'ed).
void grouped_gemm_train(benchmark::State& state, int64_t M, int64_t E, int64_t N, int64_t H, bool fused) {
  torch::manual_seed(0);
  auto x = torch::randn({M, H}).requires_grad_();
  auto w = torch::randn({E, N, H}).requires_grad_();
  auto offs = torch::arange(E + 1, torch::kLong) * (M / E);
  offs[E] = M;
  auto grad_out = torch::randn({M, N});
  auto body = [&] {
    x.mutable_grad() = torch::Tensor();
    w.mutable_grad() = torch::Tensor();
    torch::Tensor y;
    if (fused) {
      y = ts::ops::grouped_gemm(x, w, offs);
    } else {
      // split and unbind: their backward builds each input's gradient once (narrow and select
      // would each materialize a zero gradient of the whole input per expert).
      const int64_t* o = offs.data_ptr<int64_t>();
      std::vector<int64_t> rows(E);
      for (int64_t e = 0; e < E; ++e) rows[e] = o[e + 1] - o[e];
      auto xs = x.split_with_sizes(rows);
      auto ws = w.unbind(0);
      std::vector<torch::Tensor> parts;
      for (int64_t e = 0; e < E; ++e) parts.push_back(torch::mm(xs[e], ws[e].t()));
      y = torch::cat(parts);
    }
    y.backward(grad_out);
    benchmark::DoNotOptimize(x.grad().data_ptr());
    benchmark::DoNotOptimize(w.grad().data_ptr());
  };
  body();
  for (auto _ : state) body();
  const double flops = 3 * 2.0 * M * N * H;  // forward, grad_x, grad_w
  state.counters["flop_per_s"] = benchmark::Counter(flops * state.iterations(), benchmark::Counter::kIsRate);
}

void register_all() {
  for (int64_t T : {4096, 32768})
    for (int64_t H : {256, 1024})
      for (int64_t E : {8, 64})
        for (int64_t K : {2, 8}) {
          const std::string args = fmt::format("/{}/{}/{}/{}", T, H, E, K);
          // The largest cases move gigabytes per iteration: a few iterations are plenty.
          const double min_time = T * H * K >= (int64_t{1} << 27) ? 0.5 : 0.2;
          for (bool fused : {true, false})
            benchmark::RegisterBenchmark(
                fmt::format("moe_permute_unpermute/{}{}", fused ? "tinyseek" : "base:torch", args).c_str(),
                [=](benchmark::State& s) { permute_unpermute(s, T, H, E, K, fused); })
                ->Unit(benchmark::kMillisecond)
                ->MinTime(min_time)
                ->UseRealTime();
        }
  struct G {
    int64_t M, E, N, H;
  };
  for (auto g : {G{8192, 8, 512, 512}, G{32768, 64, 256, 256}, G{16384, 64, 512, 1024}}) {
    const std::string args = fmt::format("/{}/{}/{}/{}", g.M, g.E, g.N, g.H);
    auto reg = [&](const std::string& name, Gemm impl) {
      benchmark::RegisterBenchmark(fmt::format("{}{}", name, args).c_str(),
                                   [=](benchmark::State& s) { grouped_gemm(s, g.M, g.E, g.N, g.H, impl); })
          ->Unit(benchmark::kMillisecond)
          ->MinTime(0.3)
          ->UseRealTime();
    };
    reg("grouped_gemm/tinyseek", Gemm::kGrouped);
    reg("grouped_gemm/base:loop_matmul", Gemm::kLoop);
    reg("grouped_gemm_dense/tinyseek", Gemm::kGrouped);
    reg("grouped_gemm_dense/base:dense_mm", Gemm::kDense);
    for (bool fused : {true, false})
      benchmark::RegisterBenchmark(
          fmt::format("grouped_gemm_train/{}{}", fused ? "tinyseek" : "base:loop_autograd", args).c_str(),
          [=](benchmark::State& st) { grouped_gemm_train(st, g.M, g.E, g.N, g.H, fused); })
          ->Unit(benchmark::kMillisecond)
          ->MinTime(0.3)
          ->UseRealTime();
  }
}
const int registered = (register_all(), 0);

}  // namespace
