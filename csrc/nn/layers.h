// Building blocks shared by every model: RMSNorm (through the fused op), rotary embeddings and
// the SwiGLU feed-forward.
#pragma once

#include <torch/torch.h>

#include "csrc/config/config.h"
#include "csrc/nn/linear.h"

namespace ts::nn {

// y = x / rms(x) * weight, computed by torch.ops.tinyseek.rms_norm.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Rotary position embedding tables for head width `dim` (even), positions [0, max_len).
struct Rope {
  torch::Tensor cos, sin;  // [max_len, dim/2]
  static Rope make(int64_t dim, int64_t max_len, double theta, torch::Device device);
  // x [B, T, H, dim] rotated by positions [offset, offset+T): pairs (x[2i], x[2i+1]).
  torch::Tensor apply(const torch::Tensor& x, int64_t offset = 0) const;
};

// x [B, S, C] at row pos[b] of each sequence b: [B, C] (a view when B is 1).
torch::Tensor rows_at(const torch::Tensor& x, const std::vector<int64_t>& pos);

// Whether the models run tinyseek's fused element-wise kernels (the SwiGLU activation) or the
// composition of torch ops they replace; process-wide, on by default. train.fused sets it for a
// run; tests compare the two paths.
void set_fused_kernels(bool on);
bool fused_kernels();

// silu(gate) * up: torch.ops.tinyseek.swiglu where fused_kernels() and the dtype has a kernel
// (fp32; bf16 on CUDA), else the torch composition.
torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up);
// The same over gate_up [..., 2F] = [gate | up] (torch.ops.tinyseek.swiglu_packed): [..., F].
torch::Tensor swiglu_packed(const torch::Tensor& gate_up);

// SwiGLU: w2(silu(w1 x) * w3 x).
class SwiGLUImpl : public torch::nn::Module {
 public:
  SwiGLUImpl(int64_t dim, int64_t hidden, const config::PrecisionConfig& precision);
  torch::Tensor forward(const torch::Tensor& x);
  Linear w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(SwiGLU);

}  // namespace ts::nn
