// FP8 linear layers with autograd, built from the FP8 ops (so every backend, Meta included, runs
// them): y = x W^T with Fprop, Dgrad and Wgrad as scaled FP8 GEMMs, each GEMM's operands
// quantized along that GEMM's own reduction dimension.
//
//   GEMM    out [rows, cols]      A (reduced along)        B (reduced along)
//   Fprop   y  [M, N] = x W^T     x [M, K]   (K)           W [N, K]   (K)
//   Dgrad   dx [M, K] = dy W      dy [M, N]  (N)           W^T [K, N] (N)
//   Wgrad   dW [N, K] = dy^T x    dy^T [N, M] (M, tokens)  x^T [K, M] (M, tokens)
//
// Blockwise (V3): activations and gradients in 1 x 128 tiles, W in 128 x 128 blocks; Dgrad reuses
// W's codes and block scales transposed (a block of W^T is the transpose of a block of W, so this
// is bit for bit what quantizing W^T gives); Wgrad quantizes dy^T and x^T in tiles along the
// tokens, so its B operand has per-row scales. Per-tensor (delayed scaling): each tensor is
// quantized once with one scale and its codes are transposed for the backward GEMMs.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "csrc/ops/fp8.h"
#include "csrc/util/check.h"

namespace ts::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kG = kern::kFp8GemmBlock;

struct GemmKnobs {
  int64_t promote_interval, accum_mantissa_bits;
  std::string accum_model;

  at::Tensor gemm(const at::Tensor& a, const at::Tensor& sa, const at::Tensor& b, const at::Tensor& sb) const {
    return fp8_gemm_nt(a, sa, b, sb, at::kFloat, promote_interval, accum_mantissa_bits, accum_model);
  }
  void save(AutogradContext* ctx) const {
    ctx->saved_data["promote_interval"] = promote_interval;
    ctx->saved_data["accum_mantissa_bits"] = accum_mantissa_bits;
    ctx->saved_data["accum_model"] = accum_model;
  }
  static GemmKnobs load(AutogradContext* ctx) {
    return {ctx->saved_data["promote_interval"].toInt(), ctx->saved_data["accum_mantissa_bits"].toInt(),
            ctx->saved_data["accum_model"].toStringRef()};
  }
};

void check_linear_args(const char* op, const at::Tensor& x, const at::Tensor& weight) {
  TS_CHECK_ARG(op, x, x.dim() >= 1, "expected at least 1 dimension [..., K], got a scalar");
  TS_CHECK_DTYPE(op, x, at::kFloat);
  TS_CHECK_DIM(op, weight, 2);
  TS_CHECK_DTYPE(op, weight, at::kFloat);
  TS_CHECK_ARG(op, weight, weight.sym_size(1) == x.sym_size(-1), "expected [N, K] with K = ", x.sym_size(-1),
               " (the last dim of x), got ", ::ts::shape_str(weight));
  TS_CHECK_SAME_DEVICE(op, weight, x);
}

// [..., K] -> [M, K] and back to [..., N].
at::Tensor rows_of(const at::Tensor& t) { return t.reshape_symint({-1, t.sym_size(-1)}).contiguous(); }
at::Tensor unflatten(const at::Tensor& y2, const at::Tensor& like, const c10::SymInt& n) {
  std::vector<c10::SymInt> shape(like.sym_sizes().begin(), like.sym_sizes().end());
  shape.back() = n;
  return y2.view_symint(shape);
}

// ---- Blockwise (V3) --------------------------------------------------------------------------------
// Fprop; returns y [..., N] and W's blockwise quantization (reused by Dgrad).
std::tuple<at::Tensor, at::Tensor, at::Tensor> blockwise_forward(const at::Tensor& x, const at::Tensor& weight,
                                                                 const GemmKnobs& knobs) {
  auto [qx, sx] = fp8_quantize_tilewise(rows_of(x), kG, false);
  auto [qw, sw] = fp8_quantize_blockwise(weight, kG, false);
  return {unflatten(knobs.gemm(qx, sx, qw, sw), x, weight.sym_size(0)), qw, sw};
}

class Fp8LinearFunction : public torch::autograd::Function<Fp8LinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const GemmKnobs& knobs) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, qw, sw] = blockwise_forward(x, weight, knobs);
    ctx->save_for_backward({x, qw, sw});
    knobs.save(ctx);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& qw = saved[1];
    const auto& sw = saved[2];
    const auto knobs = GemmKnobs::load(ctx);
    auto dy = rows_of(grads[0]);  // [M, N]
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {  // Dgrad: dy tiles along N, W^T blocks = W's blocks transposed
      auto [qdy, sdy] = fp8_quantize_tilewise(dy, kG, false);
      dx = unflatten(knobs.gemm(qdy, sdy, qw.t().contiguous(), sw.t().contiguous()), x, x.sym_size(-1));
    }
    if (ctx->needs_input_grad(1)) {  // Wgrad: dy^T and x^T in tiles along the tokens
      auto [qdyt, sdyt] = fp8_quantize_tilewise(dy.t().contiguous(), kG, false);
      auto [qxt, sxt] = fp8_quantize_tilewise(rows_of(x).t().contiguous(), kG, false);
      dw = knobs.gemm(qdyt, sdyt, qxt, sxt);  // B = x^T [K, M] with per-row scales [K, ceil(M/128)]
    }
    return {dx, dw, at::Tensor()};
  }
};

// ---- Per-tensor (delayed scaling) -----------------------------------------------------------------
// scale if > 0, else the tensor's own max(amax, 1e-4) / 448; [] fp32, no host sync.
at::Tensor resolve_scale(const at::Tensor& scale, const at::Tensor& t) {
  at::Tensor amax = TORCH_GUARD_OR_FALSE(t.sym_numel() == 0) ? at::zeros({}, t.options()) : t.abs().amax();
  auto jit = at::clamp_min(amax, kern::kFp8AmaxFloor) / kern::kFp8E4M3Max;
  return at::where(scale > 0, scale, jit);
}

// e4m3(t / scale), saturating like the kernels (torch's own cast would turn |v| > 464 into NaN).
at::Tensor quantize_per_tensor(const at::Tensor& t, const at::Tensor& scale) {
  return at::clamp(t / scale, -kern::kFp8E4M3Max, kern::kFp8E4M3Max).to(at::kFloat8_e4m3fn);
}

// The per-tensor scale as the GEMM's scale tensor for operand q [rows, K]: tiles or blocks.
at::Tensor scale_grid(const at::Tensor& scale, const at::Tensor& q, bool blocks) {
  auto rows = blocks ? (q.sym_size(0) + (kG - 1)) / kG : q.sym_size(0);
  auto cols = (q.sym_size(1) + (kG - 1)) / kG;
  return scale.reshape({1, 1}).expand_symint({rows, cols}).contiguous();
}

void check_scales(const at::Tensor& scales, const at::Tensor& x) {
  const char* op = "fp8_linear_per_tensor";
  TS_CHECK_DIM(op, scales, 1);
  TS_CHECK_ARG(op, scales, scales.sym_size(0) == 3, "expected 3 scales (x, weight, grad_y), got ",
               ::ts::shape_str(scales));
  TS_CHECK_DTYPE(op, scales, at::kFloat);
  TS_CHECK_SAME_DEVICE(op, scales, x);
}

// Fprop; returns y [..., N] and the quantized x [M, K] and weight with their scales [].
struct PerTensorForward {
  at::Tensor y, qx, sx, qw, sw;
};
PerTensorForward per_tensor_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales,
                                    const GemmKnobs& knobs) {
  auto x2 = rows_of(x);
  auto sx = resolve_scale(scales.select(0, 0), x2), sw = resolve_scale(scales.select(0, 1), weight);
  auto qx = quantize_per_tensor(x2, sx), qw = quantize_per_tensor(weight, sw);
  auto y = knobs.gemm(qx, scale_grid(sx, qx, false), qw, scale_grid(sw, qw, true));
  return {unflatten(y, x, weight.sym_size(0)), qx, sx, qw, sw};
}

class Fp8LinearPerTensorFunction : public torch::autograd::Function<Fp8LinearPerTensorFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& scales, const GemmKnobs& knobs) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto f = per_tensor_forward(x, weight, scales, knobs);
    ctx->save_for_backward({x, f.qx, f.sx, f.qw, f.sw, scales});
    knobs.save(ctx);
    return f.y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &qx = saved[1], &sx = saved[2], &qw = saved[3], &sw = saved[4], &scales = saved[5];
    const auto knobs = GemmKnobs::load(ctx);
    auto dy = rows_of(grads[0]);  // [M, N]
    auto sdy = resolve_scale(scales.select(0, 2), dy);
    auto qdy = quantize_per_tensor(dy, sdy);
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      auto qwt = qw.t().contiguous();  // [K, N]
      dx = unflatten(knobs.gemm(qdy, scale_grid(sdy, qdy, false), qwt, scale_grid(sw, qwt, true)), x, x.sym_size(-1));
    }
    if (ctx->needs_input_grad(1)) {
      auto qdyt = qdy.t().contiguous(), qxt = qx.t().contiguous();  // [N, M], [K, M]
      dw = knobs.gemm(qdyt, scale_grid(sdy, qdyt, false), qxt, scale_grid(sx, qxt, true));
    }
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

// ---- Registrations ------------------------------------------------------------------------------
at::Tensor fp8_linear_autograd(const at::Tensor& x, const at::Tensor& weight, int64_t promote_interval,
                               int64_t accum_mantissa_bits, std::string_view accum_model) {
  check_linear_args("fp8_linear", x, weight);
  return Fp8LinearFunction::apply(x, weight,
                                  GemmKnobs{promote_interval, accum_mantissa_bits, std::string(accum_model)});
}

// Below autograd (and on Meta): the forward alone.
at::Tensor fp8_linear_composite(const at::Tensor& x, const at::Tensor& weight, int64_t promote_interval,
                                int64_t accum_mantissa_bits, std::string_view accum_model) {
  check_linear_args("fp8_linear", x, weight);
  return std::get<0>(
      blockwise_forward(x, weight, GemmKnobs{promote_interval, accum_mantissa_bits, std::string(accum_model)}));
}

at::Tensor fp8_linear_per_tensor_autograd(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales,
                                          int64_t promote_interval, int64_t accum_mantissa_bits,
                                          std::string_view accum_model) {
  check_linear_args("fp8_linear_per_tensor", x, weight);
  check_scales(scales, x);
  return Fp8LinearPerTensorFunction::apply(x, weight, scales,
                                           GemmKnobs{promote_interval, accum_mantissa_bits, std::string(accum_model)});
}

at::Tensor fp8_linear_per_tensor_composite(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scales,
                                           int64_t promote_interval, int64_t accum_mantissa_bits,
                                           std::string_view accum_model) {
  check_linear_args("fp8_linear_per_tensor", x, weight);
  check_scales(scales, x);
  return per_tensor_forward(x, weight, scales,
                            GemmKnobs{promote_interval, accum_mantissa_bits, std::string(accum_model)})
      .y;
}

}  // namespace
}  // namespace ts::ops

TORCH_LIBRARY_IMPL(tinyseek, CompositeExplicitAutograd, m) {
  m.impl("fp8_linear", &ts::ops::fp8_linear_composite);
  m.impl("fp8_linear_per_tensor", &ts::ops::fp8_linear_per_tensor_composite);
}
TORCH_LIBRARY_IMPL(tinyseek, Autograd, m) {
  m.impl("fp8_linear", &ts::ops::fp8_linear_autograd);
  m.impl("fp8_linear_per_tensor", &ts::ops::fp8_linear_per_tensor_autograd);
}
