// CUDA backend of the routed-expert ops: fp32 or bf16 activations and weights, fp32 gate weights,
// int64 indices; kernels of kernels/moe.h on the current stream. moe_permute synchronizes once to
// report an out-of-range expert id; the other ops trust sorted_to_token / expert_offsets (they are
// moe_permute's outputs) instead of reading them back, so they never synchronize.
#include <c10/cuda/CUDAGuard.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/cuda_internal.h"
#include "csrc/ops/moe.h"
#include "csrc/util/check.h"
#include "kernels/moe.h"

namespace ts::ops {
namespace {

// slot -> sorted row, the inverse of sorted_to_token, on the device.
at::Tensor invert_slots(const at::Tensor& s2t) {
  auto inv = at::empty_like(s2t);
  inv.index_copy_(0, s2t, at::arange(s2t.numel(), s2t.options()));
  return inv;
}

}  // namespace

Tensor3 CudaKernels::moe_permute(const at::Tensor& x_in, const at::Tensor& ids_in, int64_t E) {
  const char* op = "moe_permute";
  check_moe_permute_args(x_in, ids_in, E);
  const bool bf16 = is_bf16(op, x_in);
  c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous(), ids = ids_in.contiguous();
  const int64_t T = x.size(0), H = x.size(1), K = ids.size(1), M = T * K;
  auto idx = ids.options();
  auto s2t = at::empty({M}, idx), t2s = at::empty({M}, idx), offs = at::empty({E + 1}, idx);
  auto err = at::empty({2}, idx);
  auto ws = at::empty({kern::moe_routing_cuda_workspace(T, K, E)}, x.options().dtype(at::kByte));
  kern::moe_routing_cuda(
      {ids.data_ptr<int64_t>(), offs.data_ptr<int64_t>(), s2t.data_ptr<int64_t>(), t2s.data_ptr<int64_t>(), T, K, E},
      err.data_ptr<int64_t>(), ws.data_ptr(), ws.numel(), current_stream());
  auto e = err.cpu();  // the one synchronization: a bad id must be a clear error, not garbage rows
  const int64_t bad = e.data_ptr<int64_t>()[0];
  TS_CHECK_ARG(op, topk_ids, bad < 0, "expert id ", e.data_ptr<int64_t>()[1], " at [", bad / K, ", ", bad % K,
               "] is outside [0, ", E, ") (num_experts = ", E, ")");
  auto xs = at::empty({M, H}, x.options());
  kern::moe_permute_cuda({x.data_ptr(), s2t.data_ptr<int64_t>(), xs.data_ptr(), T, K, H, bf16}, current_stream());
  return {xs, s2t, offs};
}

at::Tensor CudaKernels::moe_permute_bwd(const at::Tensor& g_in, const at::Tensor& s2t_in, c10::SymInt tokens) {
  const char* op = "moe_permute_bwd";
  const int64_t T = tokens.guard_int(__FILE__, __LINE__);
  TS_CHECK_DIM(op, g_in, 2);
  const bool bf16 = is_bf16(op, g_in);
  TS_CHECK_DTYPE(op, s2t_in, at::kLong);
  const int64_t M = g_in.size(0), H = g_in.size(1);
  TS_CHECK_ARG(op, sorted_to_token, s2t_in.numel() == M, "expected ", M, " entries, got ", s2t_in.numel());
  TS_CHECK_ARG(op, tokens, (T == 0 && M == 0) || (T > 0 && M % T == 0), "expected a divisor of ", M, ", got ", T);
  c10::cuda::CUDAGuard guard(g_in.device());
  auto g = g_in.contiguous();
  auto t2s = invert_slots(s2t_in.contiguous());
  auto gx = at::empty({T, H}, g.options());
  kern::moe_permute_backward_cuda({g.data_ptr(), t2s.data_ptr<int64_t>(), gx.data_ptr(), T, T ? M / T : 0, H, bf16},
                                  current_stream());
  return gx;
}

at::Tensor CudaKernels::moe_unpermute(const at::Tensor& ys_in, const at::Tensor& s2t_in, const at::Tensor& w_in) {
  check_moe_unpermute_args(ys_in, s2t_in, w_in);
  const bool bf16 = is_bf16("moe_unpermute", ys_in);
  c10::cuda::CUDAGuard guard(ys_in.device());
  auto ys = ys_in.contiguous(), w = w_in.contiguous();
  const int64_t T = w.size(0), K = w.size(1), H = ys.size(1);
  auto t2s = invert_slots(s2t_in.contiguous());
  auto y = at::empty({T, H}, ys.options());
  kern::moe_unpermute_cuda({ys.data_ptr(), t2s.data_ptr<int64_t>(), w.data_ptr<float>(), y.data_ptr(), T, K, H, bf16},
                           current_stream());
  return y;
}

Tensor2 CudaKernels::moe_unpermute_bwd(const at::Tensor& gy_in, const at::Tensor& ys_in, const at::Tensor& s2t_in,
                                       const at::Tensor& w_in) {
  const char* op = "moe_unpermute_bwd";
  check_moe_unpermute_args(ys_in, s2t_in, w_in);
  const bool bf16 = is_bf16(op, ys_in);
  check_moe_output_grad(op, "grad_y", gy_in, w_in.size(0), ys_in.size(1), ys_in, "y_sorted");
  c10::cuda::CUDAGuard guard(ys_in.device());
  auto gy = gy_in.contiguous(), ys = ys_in.contiguous(), w = w_in.contiguous();
  const int64_t T = w.size(0), K = w.size(1), H = ys.size(1);
  auto t2s = invert_slots(s2t_in.contiguous());
  auto gys = at::empty_like(ys);
  auto gw = at::empty_like(w);
  kern::moe_unpermute_backward_cuda({gy.data_ptr(), ys.data_ptr(), t2s.data_ptr<int64_t>(), w.data_ptr<float>(),
                                     gys.data_ptr(), gw.data_ptr<float>(), T, K, H, bf16},
                                    current_stream());
  return {gys, gw};
}

at::Tensor CudaKernels::grouped_gemm(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& offs_in) {
  check_grouped_gemm_args(x_in, w_in, offs_in);
  const bool bf16 = is_bf16("grouped_gemm", x_in);
  c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous(), w = w_in.contiguous(), offs = offs_in.contiguous();
  const int64_t M = x.size(0), H = x.size(1), E = w.size(0), N = w.size(1);
  auto out = at::empty({M, N}, x.options());
  kern::moe_grouped_gemm_cuda({x.data_ptr(), w.data_ptr(), offs.data_ptr<int64_t>(), out.data_ptr(), M, N, H, E, bf16},
                              current_stream());
  return out;
}

Tensor2 CudaKernels::grouped_gemm_bwd(const at::Tensor& g_in, const at::Tensor& x_in, const at::Tensor& w_in,
                                      const at::Tensor& offs_in) {
  const char* op = "grouped_gemm_bwd";
  check_grouped_gemm_args(x_in, w_in, offs_in);
  const bool bf16 = is_bf16(op, x_in);
  check_moe_output_grad(op, "grad_out", g_in, x_in.size(0), w_in.size(1), x_in, "x_sorted");
  c10::cuda::CUDAGuard guard(x_in.device());
  auto g = g_in.contiguous(), x = x_in.contiguous(), w = w_in.contiguous(), offs = offs_in.contiguous();
  const int64_t M = x.size(0), H = x.size(1), E = w.size(0), N = w.size(1);
  auto gx = at::empty_like(x);
  auto gw = at::empty_like(w);
  kern::moe_grouped_gemm_backward_cuda({g.data_ptr(), x.data_ptr(), w.data_ptr(), offs.data_ptr<int64_t>(),
                                        gx.data_ptr(), gw.data_ptr(), M, N, H, E, bf16},
                                       current_stream());
  return {gx, gw};
}

}  // namespace ts::ops
