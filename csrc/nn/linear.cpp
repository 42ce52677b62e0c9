#include "csrc/nn/linear.h"

#include <fmt/format.h>

#include <cmath>

#include "csrc/nn/model_config.h"
#include "csrc/ops/fp8.h"
#include "csrc/ops/skinny_linear.h"

namespace ts::nn {

LinearImpl::LinearImpl(int64_t in, int64_t out, const config::PrecisionConfig& precision)
    : in_features(in), out_features(out), kind(precision.kind), precision_(precision) {
  // Kaiming-uniform like torch.nn.Linear; the transformer re-initializes with its own scheme.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = register_parameter("weight", torch::empty({out, in}).uniform_(-bound, bound));
  if (kind == "fp8" && precision.fp8_recipe == "per_tensor_delayed")
    amax_history = register_buffer("fp8_amax_history", torch::zeros({precision.amax_history_len, 3}));
  check_precision_config(precision);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  const double f = precision_.inject_outliers;
  if (f == 0) return project(x);
  // One outlier token per sequence: row 0 of dim -2 ([..., T, C]) scaled by f going in and
  // divided back coming out; f is a power of two, so in fp32 this changes no bit.
  auto d = torch::ones({x.dim() >= 2 ? x.size(-2) : 1, 1}, x.options());
  d[0] = f;
  if (x.dim() < 2) d = d.view({1});
  return project(x * d) / d;
}

// Inference over the few rows of a decoding step on the CPU goes through the skinny GEMM: several
// rows there cost about what one row costs, which is what speculative verification needs.
namespace {
bool decoding_rows(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!x.is_cpu() || x.scalar_type() != torch::kFloat || x.dim() == 0) return false;
  if (torch::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad())) return false;
  const int64_t K = x.size(-1);
  return K > 0 && x.numel() / K <= ops::kSkinnyLinearRows;
}
}  // namespace

torch::Tensor LinearImpl::project(const torch::Tensor& x) {
  if (kind != "fp8") {
    if (decoding_rows(x, weight)) return ops::skinny_linear(x, weight);
    return torch::nn::functional::linear(x, weight);
  }
  const auto& p = precision_;
  if (p.fp8_recipe == "per_tensor_delayed") return per_tensor_delayed(x);
  return ops::fp8_linear(x, weight, p.promote_interval, p.accum_mantissa_bits, p.accum_model);
}

// Delayed scaling: each tensor's scale is max(amax over the history) / 448, i.e. it comes from
// the previous steps, not from the tensor being quantized (values above it saturate at 448).
// A tensor with no history yet is scaled just in time (scale -1 tells the op). Training steps
// record this step's amax of x and W in a new row 0, and a hook records grad_y's in backward.
torch::Tensor LinearImpl::per_tensor_delayed(const torch::Tensor& x) {
  const auto& p = precision_;
  torch::Tensor scales;
  {
    torch::NoGradGuard ng;
    auto hist = amax_history.amax(0);  // [3]
    scales = torch::where(hist > 0, torch::clamp_min(hist, kern::kFp8AmaxFloor) / kern::kFp8E4M3Max,
                          torch::full({3}, -1.0f, hist.options()));
  }
  auto y = ops::fp8_linear_per_tensor(x, weight, scales, p.promote_interval, p.accum_mantissa_bits, p.accum_model);
  if (!is_training() || !torch::GradMode::is_enabled()) return y;
  {
    torch::NoGradGuard ng;
    amax_history.copy_(amax_history.roll(1, 0));
    amax_history[0][0] = x.numel() ? x.abs().amax() : torch::zeros({}, x.options());
    amax_history[0][1] = weight.abs().amax();
    amax_history[0][2] = 0;
  }
  if (y.requires_grad()) {
    auto hist = amax_history;  // shares storage with the buffer
    y.register_hook([hist](const torch::Tensor& g) {
      if (g.numel() == 0) return;
      torch::NoGradGuard ng;
      auto row = hist[0];
      row[2] = torch::maximum(row[2], g.abs().amax());  // several backward passes per step keep the max
    });
  }
  return y;
}

}  // namespace ts::nn
