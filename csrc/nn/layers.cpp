#include "csrc/nn/layers.h"

#include "csrc/ops/rms_norm.h"
#include "csrc/ops/rope.h"
#include "csrc/ops/swiglu.h"
#include "csrc/util/host_tensor.h"

#include <atomic>

namespace ts::nn {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  // Under autocast the activations may be bf16; the op's CUDA kernel takes them as they are.
  return ts::ops::rms_norm(x, weight, eps);
}

Rope Rope::make(int64_t dim, int64_t max_len, double theta, torch::Device device) {
  TORCH_CHECK(dim % 2 == 0, "rope: head dim must be even, got ", dim);
  auto inv = torch::pow(theta, -torch::arange(0, dim, 2, torch::kDouble) / static_cast<double>(dim));
  auto pos = torch::arange(max_len, torch::kDouble);
  auto ang = torch::outer(pos, inv);
  return {torch::cos(ang).to(torch::kFloat).to(device), torch::sin(ang).to(torch::kFloat).to(device)};
}

torch::Tensor Rope::apply(const torch::Tensor& x, int64_t offset) const {
  const int64_t T = x.size(1);
  return ops::rope(x, cos.narrow(0, offset, T), sin.narrow(0, offset, T));
}

SwiGLUImpl::SwiGLUImpl(int64_t dim, int64_t hidden, const config::PrecisionConfig& precision) {
  w1 = register_module("w1", Linear(dim, hidden, precision));
  w3 = register_module("w3", Linear(dim, hidden, precision));
  w2 = register_module("w2", Linear(hidden, dim, precision));
}

namespace {
std::atomic<bool> g_fused_kernels{true};
}  // namespace

torch::Tensor rows_at(const torch::Tensor& x, const std::vector<int64_t>& pos) {
  TORCH_CHECK(x.dim() == 3 && static_cast<int64_t>(pos.size()) == x.size(0),
              "rows_at: expected x [B, S, C] and B positions, got x ", x.sizes(), " and ", pos.size(), " positions");
  if (x.size(0) == 1) return x.select(1, pos[0]);
  auto idx = util::host_tensor(pos, {x.size(0), 1, 1}, x.device()).expand({x.size(0), 1, x.size(2)});
  return x.gather(1, idx).squeeze(1);
}

void set_fused_kernels(bool on) { g_fused_kernels.store(on); }
bool fused_kernels() { return g_fused_kernels.load(); }

namespace {
bool has_kernel(const torch::Tensor& x) {
  const auto dt = x.scalar_type();
  return fused_kernels() && (dt == torch::kFloat || (dt == torch::kBFloat16 && x.is_cuda()));
}
}  // namespace

torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up) {
  if (has_kernel(gate) && up.scalar_type() == gate.scalar_type()) return ops::swiglu(gate, up);
  return torch::silu(gate) * up;
}

torch::Tensor swiglu_packed(const torch::Tensor& gate_up) {
  if (has_kernel(gate_up)) return ops::swiglu_packed(gate_up);
  const int64_t F = gate_up.size(-1) / 2;
  return torch::silu(gate_up.narrow(-1, 0, F)) * gate_up.narrow(-1, F, F);
}

torch::Tensor SwiGLUImpl::forward(const torch::Tensor& x) { return w2(swiglu(w1(x), w3(x))); }

}  // namespace ts::nn
