// C++ entry points of the routed-expert ops (torch.ops.tinyseek.moe_permute / moe_unpermute /
// grouped_gemm). They go through the dispatcher, so autograd, Meta and device dispatch apply
// exactly as for Python callers. Kernel contracts: kernels/moe.h.
//
// Dimensions: T tokens, K routed choices per token, E routed experts, M = T*K sorted rows,
// H the row width of x, N an expert's output width.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace ts::ops {

// x [T, H], topk_ids [T, K] int64 in [0, E) ->
//   x_sorted [M, H]: the rows of x, one per (token, choice), grouped by expert, stable inside an
//                    expert (ascending token, then k);
//   sorted_to_token [M] int64: the slot s = t*K + k of each sorted row (token t = s / K);
//   expert_offsets [E + 1] int64: expert e owns sorted rows [offsets[e], offsets[e+1]).
// Differentiable in x. An id outside [0, E) is an error naming the token, k and id.
std::tuple<at::Tensor, at::Tensor, at::Tensor> moe_permute(const at::Tensor& x, const at::Tensor& topk_ids,
                                                           int64_t num_experts);

// y [T, H] with y[t] = sum_k topk_weights[t, k] * y_sorted[row of slot t*K + k]; y_sorted [M, H],
// sorted_to_token [M] from moe_permute, topk_weights [T, K] fp32. Differentiable in y_sorted and
// topk_weights.
at::Tensor moe_unpermute(const at::Tensor& y_sorted, const at::Tensor& sorted_to_token, const at::Tensor& topk_weights);

// out [M, N]: rows of expert e times w[e]^T; x_sorted [M, H], w [E, N, H] (nn.Linear layout per
// expert), expert_offsets [E + 1]. Differentiable in x_sorted and w.
at::Tensor grouped_gemm(const at::Tensor& x_sorted, const at::Tensor& w, const at::Tensor& expert_offsets);

// Shared argument checks (shapes, dtypes, devices; no data reads), used by every backend and Meta.
void check_moe_permute_args(const at::Tensor& x, const at::Tensor& topk_ids, int64_t num_experts);
void check_moe_unpermute_args(const at::Tensor& y_sorted, const at::Tensor& sorted_to_token,
                              const at::Tensor& topk_weights);
void check_grouped_gemm_args(const at::Tensor& x_sorted, const at::Tensor& w, const at::Tensor& expert_offsets);
// The incoming gradient of a backward kernel: [rows, cols] (the forward output's shape) in the
// dtype of the forward's activation `like` (y_sorted for moe_unpermute, x_sorted for grouped_gemm).
void check_moe_output_grad(const char* op, const char* grad_name, const at::Tensor& grad, int64_t rows, int64_t cols,
                           const at::Tensor& like, const char* like_name);
// The same through sym sizes, for the Meta kernels.
void check_moe_output_grad_shape(const char* op, const char* grad_name, const at::Tensor& grad, const c10::SymInt& rows,
                                 const c10::SymInt& cols, const at::Tensor& like, const char* like_name);

}  // namespace ts::ops
