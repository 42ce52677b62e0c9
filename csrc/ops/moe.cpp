// The routed-expert ops: argument checks, C++ entry points, Meta kernels (shapes only) and
// autograd (torch::autograd::Function at the Autograd key). Backends: moe_cpu.cpp, moe_cuda.cpp.
#include "csrc/ops/moe.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "csrc/ops/backend_kernels.h"
#include "csrc/util/check.h"

namespace ts::ops {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_moe_permute_args(const at::Tensor& x, const at::Tensor& topk_ids, int64_t num_experts) {
  const char* op = "moe_permute";
  TS_CHECK_DIM(op, x, 2);
  TS_CHECK_ARG(op, x, at::isFloatingType(x.scalar_type()), "expected a floating dtype, got ", x.scalar_type());
  TS_CHECK_DIM(op, topk_ids, 2);
  TS_CHECK_DTYPE(op, topk_ids, at::kLong);
  TS_CHECK_ARG(op, topk_ids, topk_ids.sym_size(0) == x.sym_size(0), "expected ", x.sym_size(0),
               " rows (one per token of x), got shape ", ::ts::shape_str(topk_ids));
  TS_CHECK_SAME_DEVICE(op, topk_ids, x);
  TS_CHECK_ARG(op, num_experts, num_experts >= 1, "expected at least 1 expert, got ", num_experts);
}

void check_moe_unpermute_args(const at::Tensor& y_sorted, const at::Tensor& sorted_to_token,
                              const at::Tensor& topk_weights) {
  const char* op = "moe_unpermute";
  TS_CHECK_DIM(op, y_sorted, 2);
  TS_CHECK_ARG(op, y_sorted, at::isFloatingType(y_sorted.scalar_type()), "expected a floating dtype, got ",
               y_sorted.scalar_type());
  TS_CHECK_DIM(op, sorted_to_token, 1);
  TS_CHECK_DTYPE(op, sorted_to_token, at::kLong);
  TS_CHECK_ARG(op, sorted_to_token, sorted_to_token.sym_size(0) == y_sorted.sym_size(0), "expected ",
               y_sorted.sym_size(0), " entries (one per row of y_sorted), got ", sorted_to_token.sym_size(0));
  TS_CHECK_DIM(op, topk_weights, 2);
  TS_CHECK_DTYPE(op, topk_weights, at::kFloat);
  TS_CHECK_ARG(op, topk_weights, topk_weights.sym_numel() == y_sorted.sym_size(0),
               "expected T*K = ", y_sorted.sym_size(0), " elements (the rows of y_sorted), got shape ",
               ::ts::shape_str(topk_weights));
  TS_CHECK_SAME_DEVICE(op, sorted_to_token, y_sorted);
  TS_CHECK_SAME_DEVICE(op, topk_weights, y_sorted);
}

void check_grouped_gemm_args(const at::Tensor& x_sorted, const at::Tensor& w, const at::Tensor& expert_offsets) {
  const char* op = "grouped_gemm";
  TS_CHECK_DIM(op, x_sorted, 2);
  TS_CHECK_ARG(op, x_sorted, at::isFloatingType(x_sorted.scalar_type()), "expected a floating dtype, got ",
               x_sorted.scalar_type());
  TS_CHECK_DIM(op, w, 3);
  TS_CHECK_ARG(op, w, w.scalar_type() == x_sorted.scalar_type(), "expected dtype ", x_sorted.scalar_type(),
               " (that of x_sorted), got ", w.scalar_type());
  TS_CHECK_ARG(op, w, w.sym_size(2) == x_sorted.sym_size(1), "expected shape [E, N, ", x_sorted.sym_size(1),
               "] (H = the width of x_sorted), got ", ::ts::shape_str(w));
  TS_CHECK_DIM(op, expert_offsets, 1);
  TS_CHECK_DTYPE(op, expert_offsets, at::kLong);
  TS_CHECK_ARG(op, expert_offsets, expert_offsets.sym_size(0) == w.sym_size(0) + 1, "expected ", w.sym_size(0) + 1,
               " entries (E + 1, E from w), got ", expert_offsets.sym_size(0));
  TS_CHECK_SAME_DEVICE(op, w, x_sorted);
  TS_CHECK_SAME_DEVICE(op, expert_offsets, x_sorted);
}

void check_moe_output_grad(const char* op, const char* grad_name, const at::Tensor& grad, int64_t rows, int64_t cols,
                           const at::Tensor& like, const char* like_name) {
  // TS_CHECK_ARG's message, with the argument named at run time.
  TORCH_CHECK(
      grad.dim() == 2 && grad.size(0) == rows && grad.size(1) == cols && grad.scalar_type() == like.scalar_type(),
      "tinyseek.", op, ": argument '", grad_name, "': expected shape [", rows, ", ", cols, "] and the dtype of ",
      like_name, ", got ", ::ts::shape_str(grad), " ", grad.scalar_type());
}

void check_moe_output_grad_shape(const char* op, const char* grad_name, const at::Tensor& grad, const c10::SymInt& rows,
                                 const c10::SymInt& cols, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(grad.dim() == 2 && grad.sym_size(0) == rows && grad.sym_size(1) == cols &&
                  grad.scalar_type() == like.scalar_type(),
              "tinyseek.", op, ": argument '", grad_name, "': expected shape [", rows, ", ", cols,
              "] and the dtype of ", like_name, ", got ", ::ts::shape_str(grad), " ", grad.scalar_type());
}

namespace {

template <class Fn>
c10::TypedOperatorHandle<Fn> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

at::Tensor permute_bwd_call(const at::Tensor& g, const at::Tensor& s2t, c10::SymInt tokens) {
  static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt)>("tinyseek::moe_permute_bwd");
  return op.call(g, s2t, std::move(tokens));
}

Tensor2 unpermute_bwd_call(const at::Tensor& gy, const at::Tensor& ys, const at::Tensor& s2t, const at::Tensor& w) {
  static auto op = find_op<Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
      "tinyseek::moe_unpermute_bwd");
  return op.call(gy, ys, s2t, w);
}

Tensor2 grouped_gemm_bwd_call(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& offs) {
  static auto op = find_op<Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
      "tinyseek::grouped_gemm_bwd");
  return op.call(g, x, w, offs);
}

// ---- autograd ------------------------------------------------------------------------------

class PermuteFunction : public torch::autograd::Function<PermuteFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& ids, int64_t experts) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [xs, s2t, offs] = moe_permute(x, ids, experts);
    ctx->mark_non_differentiable({s2t, offs});
    ctx->save_for_backward({s2t});
    ctx->saved_data["tokens"] = x.sym_size(0);
    return {xs, s2t, offs};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor gx;
    if (grads[0].defined())
      gx = permute_bwd_call(grads[0].contiguous(), ctx->get_saved_variables()[0], ctx->saved_data["tokens"].toSymInt());
    return {gx, at::Tensor(), at::Tensor()};
  }
};

// Autograd of out = Fwd(a, b, c) where one of the three inputs, at kIndexArg, is an index tensor
// and Bwd(grad_out, a, b, c) returns the gradients of the other two, in order: moe_unpermute
// (sorted_to_token at 1) and grouped_gemm (expert_offsets at 2). Self names the node.
template <class Self, at::Tensor (*Fwd)(const at::Tensor&, const at::Tensor&, const at::Tensor&),
          Tensor2 (*Bwd)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&), int kIndexArg>
class IndexedOpFunction : public torch::autograd::Function<Self> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({a, b, c});
    return Fwd(a, b, c);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    auto [g0, g1] = Bwd(grads[0].contiguous(), s[0], s[1], s[2]);
    variable_list g = {g0, g1};
    g.insert(g.begin() + kIndexArg, at::Tensor());  // no gradient for the index tensor
    return g;
  }
};

class UnpermuteFunction : public IndexedOpFunction<UnpermuteFunction, moe_unpermute, unpermute_bwd_call, 1> {};
class GroupedGemmFunction : public IndexedOpFunction<GroupedGemmFunction, grouped_gemm, grouped_gemm_bwd_call, 2> {};

Tensor3 permute_autograd(const at::Tensor& x, const at::Tensor& ids, int64_t experts) {
  auto out = PermuteFunction::apply(x, ids, experts);
  return {out[0], out[1], out[2]};
}
at::Tensor unpermute_autograd(const at::Tensor& ys, const at::Tensor& s2t, const at::Tensor& w) {
  return UnpermuteFunction::apply(ys, s2t, w);
}
at::Tensor grouped_gemm_autograd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& offs) {
  return GroupedGemmFunction::apply(x, w, offs);
}

}  // namespace

// ---- Meta: shapes only ------------------------------------------------------------------------

Tensor3 MetaKernels::moe_permute(const at::Tensor& x, const at::Tensor& ids, int64_t experts) {
  check_moe_permute_args(x, ids, experts);
  auto rows = x.sym_size(0) * ids.sym_size(1);
  auto idx = ids.options();
  return {at::empty_symint({rows, x.sym_size(1)}, x.options()), at::empty_symint({rows}, idx),
          at::empty({experts + 1}, idx)};
}

at::Tensor MetaKernels::moe_permute_bwd(const at::Tensor& g, const at::Tensor& s2t, c10::SymInt tokens) {
  const char* op = "moe_permute_bwd";
  TS_CHECK_DIM(op, g, 2);
  TS_CHECK_DIM(op, s2t, 1);
  TS_CHECK_DTYPE(op, s2t, at::kLong);
  TS_CHECK_ARG(op, sorted_to_token, s2t.sym_size(0) == g.sym_size(0), "expected ", g.sym_size(0),
               " entries (one per row of grad_x_sorted), got ", s2t.sym_size(0));
  return at::empty_symint({std::move(tokens), g.sym_size(1)}, g.options());
}

at::Tensor MetaKernels::moe_unpermute(const at::Tensor& ys, const at::Tensor& s2t, const at::Tensor& w) {
  check_moe_unpermute_args(ys, s2t, w);
  return at::empty_symint({w.sym_size(0), ys.sym_size(1)}, ys.options());
}

Tensor2 MetaKernels::moe_unpermute_bwd(const at::Tensor& gy, const at::Tensor& ys, const at::Tensor& s2t,
                                       const at::Tensor& w) {
  check_moe_unpermute_args(ys, s2t, w);
  check_moe_output_grad_shape("moe_unpermute_bwd", "grad_y", gy, w.sym_size(0), ys.sym_size(1), ys, "y_sorted");
  return empty_grads_like(ys, w);
}

at::Tensor MetaKernels::grouped_gemm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& offs) {
  check_grouped_gemm_args(x, w, offs);
  return at::empty_symint({x.sym_size(0), w.sym_size(1)}, x.options());
}

Tensor2 MetaKernels::grouped_gemm_bwd(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w,
                                      const at::Tensor& offs) {
  check_grouped_gemm_args(x, w, offs);
  check_moe_output_grad_shape("grouped_gemm_bwd", "grad_out", g, x.sym_size(0), w.sym_size(1), x, "x_sorted");
  return empty_grads_like(x, w);
}

Tensor3 moe_permute(const at::Tensor& x, const at::Tensor& topk_ids, int64_t num_experts) {
  static auto op = find_op<Tensor3(const at::Tensor&, const at::Tensor&, int64_t)>("tinyseek::moe_permute");
  return op.call(x, topk_ids, num_experts);
}

at::Tensor moe_unpermute(const at::Tensor& y_sorted, const at::Tensor& sorted_to_token,
                         const at::Tensor& topk_weights) {
  static auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>("tinyseek::moe_unpermute");
  return op.call(y_sorted, sorted_to_token, topk_weights);
}

at::Tensor grouped_gemm(const at::Tensor& x_sorted, const at::Tensor& w, const at::Tensor& expert_offsets) {
  static auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>("tinyseek::grouped_gemm");
  return op.call(x_sorted, w, expert_offsets);
}

}  // namespace ts::ops

TORCH_LIBRARY_IMPL(tinyseek, Autograd, m) {
  m.impl("moe_permute", &ts::ops::permute_autograd);
  m.impl("moe_unpermute", &ts::ops::unpermute_autograd);
  m.impl("grouped_gemm", &ts::ops::grouped_gemm_autograd);
}
