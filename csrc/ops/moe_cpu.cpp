// CPU backend of the routed-expert ops (fp32): checks that need the data (expert ids, the slot
// permutation, the offsets), allocation, then the torch-free kernels of kernels/moe.h.
#include <vector>

#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/moe.h"
#include "csrc/util/alloc.h"
#include "csrc/util/check.h"
#include "kernels/moe.h"

namespace ts::ops {
namespace {

at::Tensor long_empty(int64_t n) { return at::empty({n}, at::TensorOptions().dtype(at::kLong)); }

// The inverse of sorted_to_token (slot -> sorted row), checking that it is a permutation of [0, M).
at::Tensor invert_slots(const char* op, const at::Tensor& sorted_to_token) {
  const int64_t M = sorted_to_token.numel();
  auto t2s = long_empty(M);
  const int64_t* s2t = sorted_to_token.data_ptr<int64_t>();
  int64_t* inv = t2s.data_ptr<int64_t>();
  std::vector<char> seen(M, 0);
  for (int64_t r = 0; r < M; ++r) {
    const int64_t s = s2t[r];
    TS_CHECK_ARG(op, sorted_to_token, s >= 0 && s < M && !seen[s], "expected a permutation of [0, ", M,
                 ") as moe_permute returns it, but entry ", r, " is ", s, s >= 0 && s < M ? " (repeated)" : "");
    seen[s] = 1;
    inv[s] = r;
  }
  return t2s;
}

void check_offsets(const char* op, const at::Tensor& offsets, int64_t rows) {
  const int64_t E = offsets.numel() - 1;
  const int64_t* o = offsets.data_ptr<int64_t>();
  TS_CHECK_ARG(op, expert_offsets, o[0] == 0 && o[E] == rows, "expected offsets[0] = 0 and offsets[E] = ", rows,
               " (the rows of x_sorted), got ", o[0], " and ", o[E]);
  for (int64_t e = 0; e < E; ++e)
    TS_CHECK_ARG(op, expert_offsets, o[e] <= o[e + 1], "expected nondecreasing offsets, but offsets[", e, "] = ", o[e],
                 " > offsets[", e + 1, "] = ", o[e + 1]);
}

}  // namespace

Tensor3 CpuKernels::moe_permute(const at::Tensor& x_in, const at::Tensor& ids_in, int64_t E) {
  const char* op = "moe_permute";
  check_moe_permute_args(x_in, ids_in, E);
  TS_CHECK_DTYPE(op, x_in, at::kFloat);  // the CPU twin is fp32; bf16 is a CUDA path
  auto x = x_in.contiguous(), ids = ids_in.contiguous();
  const int64_t T = x.size(0), H = x.size(1), K = ids.size(1), M = T * K;
  auto s2t = long_empty(M), t2s = long_empty(M), offs = long_empty(E + 1);
  auto st = kern::moe_routing_cpu(
      {ids.data_ptr<int64_t>(), offs.data_ptr<int64_t>(), s2t.data_ptr<int64_t>(), t2s.data_ptr<int64_t>(), T, K, E});
  TS_CHECK_ARG(op, topk_ids, st.ok, "expert id ", st.id, " at [", st.token, ", ", st.k, "] is outside [0, ", E,
               ") (num_experts = ", E, ")");
  auto xs = util::empty_output({M, H}, x.options());
  kern::moe_permute_cpu(
      {x.data_ptr<float>(), s2t.data_ptr<int64_t>(), xs.data_ptr<float>(), T, K, H, t2s.data_ptr<int64_t>()});
  return {xs, s2t, offs};
}

at::Tensor CpuKernels::moe_permute_bwd(const at::Tensor& g_in, const at::Tensor& s2t_in, c10::SymInt tokens) {
  const char* op = "moe_permute_bwd";
  const int64_t T = tokens.guard_int(__FILE__, __LINE__);
  TS_CHECK_DIM(op, g_in, 2);
  TS_CHECK_DTYPE(op, g_in, at::kFloat);
  TS_CHECK_DTYPE(op, s2t_in, at::kLong);
  const int64_t M = g_in.size(0), H = g_in.size(1);
  TS_CHECK_ARG(op, sorted_to_token, s2t_in.numel() == M, "expected ", M, " entries, got ", s2t_in.numel());
  TS_CHECK_ARG(op, tokens, (T == 0 && M == 0) || (T > 0 && M % T == 0), "expected a divisor of ", M, ", got ", T);
  auto g = g_in.contiguous();
  auto t2s = invert_slots(op, s2t_in.contiguous());
  auto gx = util::empty_output({T, H}, g.options());
  kern::moe_permute_backward_cpu(
      {g.data_ptr<float>(), t2s.data_ptr<int64_t>(), gx.data_ptr<float>(), T, T ? M / T : 0, H});
  return gx;
}

at::Tensor CpuKernels::moe_unpermute(const at::Tensor& ys_in, const at::Tensor& s2t_in, const at::Tensor& w_in) {
  const char* op = "moe_unpermute";
  check_moe_unpermute_args(ys_in, s2t_in, w_in);
  TS_CHECK_DTYPE(op, ys_in, at::kFloat);
  auto ys = ys_in.contiguous(), w = w_in.contiguous();
  const int64_t T = w.size(0), K = w.size(1), H = ys.size(1);
  auto t2s = invert_slots(op, s2t_in.contiguous());
  auto y = util::empty_output({T, H}, ys.options());
  kern::moe_unpermute_cpu(
      {ys.data_ptr<float>(), t2s.data_ptr<int64_t>(), w.data_ptr<float>(), y.data_ptr<float>(), T, K, H});
  return y;
}

Tensor2 CpuKernels::moe_unpermute_bwd(const at::Tensor& gy_in, const at::Tensor& ys_in, const at::Tensor& s2t_in,
                                      const at::Tensor& w_in) {
  const char* op = "moe_unpermute_bwd";
  check_moe_unpermute_args(ys_in, s2t_in, w_in);
  TS_CHECK_DTYPE(op, ys_in, at::kFloat);
  check_moe_output_grad(op, "grad_y", gy_in, w_in.size(0), ys_in.size(1), ys_in, "y_sorted");
  auto gy = gy_in.contiguous(), ys = ys_in.contiguous(), w = w_in.contiguous();
  const int64_t T = w.size(0), K = w.size(1), H = ys.size(1);
  auto t2s = invert_slots(op, s2t_in.contiguous());
  auto gys = util::empty_output(ys.sizes(), ys.options());
  auto gw = at::empty_like(w);
  kern::moe_unpermute_backward_cpu({gy.data_ptr<float>(), ys.data_ptr<float>(), t2s.data_ptr<int64_t>(),
                                    w.data_ptr<float>(), gys.data_ptr<float>(), gw.data_ptr<float>(), T, K, H});
  return {gys, gw};
}

at::Tensor CpuKernels::grouped_gemm(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& offs_in) {
  const char* op = "grouped_gemm";
  check_grouped_gemm_args(x_in, w_in, offs_in);
  TS_CHECK_DTYPE(op, x_in, at::kFloat);
  auto x = x_in.contiguous(), w = w_in.contiguous(), offs = offs_in.contiguous();
  const int64_t M = x.size(0), H = x.size(1), E = w.size(0), N = w.size(1);
  check_offsets(op, offs, M);
  auto out = util::empty_output({M, N}, x.options());
  kern::moe_grouped_gemm_cpu(
      {x.data_ptr<float>(), w.data_ptr<float>(), offs.data_ptr<int64_t>(), out.data_ptr<float>(), M, N, H, E});
  return out;
}

Tensor2 CpuKernels::grouped_gemm_bwd(const at::Tensor& g_in, const at::Tensor& x_in, const at::Tensor& w_in,
                                     const at::Tensor& offs_in) {
  const char* op = "grouped_gemm_bwd";
  check_grouped_gemm_args(x_in, w_in, offs_in);
  TS_CHECK_DTYPE(op, x_in, at::kFloat);
  check_moe_output_grad(op, "grad_out", g_in, x_in.size(0), w_in.size(1), x_in, "x_sorted");
  auto g = g_in.contiguous(), x = x_in.contiguous(), w = w_in.contiguous(), offs = offs_in.contiguous();
  const int64_t M = x.size(0), H = x.size(1), E = w.size(0), N = w.size(1);
  check_offsets(op, offs, M);
  auto gx = util::empty_output(x.sizes(), x.options());
  auto gw = util::empty_output(w.sizes(), w.options());
  kern::moe_grouped_gemm_backward_cpu({g.data_ptr<float>(), x.data_ptr<float>(), w.data_ptr<float>(),
                                       offs.data_ptr<int64_t>(), gx.data_ptr<float>(), gw.data_ptr<float>(), M, N, H,
                                       E});
  return {gx, gw};
}

}  // namespace ts::ops
