// The projection layer every module uses: y = x W^T (no bias). Its arithmetic follows
// precision.kind, so techniques that change how GEMMs run (FP8) change this one place.
#pragma once

#include <torch/torch.h>

#include "csrc/config/config.h"

namespace ts::nn {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, const config::PrecisionConfig& precision);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight;  // [out, in], fp32 master weight
  int64_t in_features, out_features;
  std::string kind;  // precision.kind this layer computes in
  // kind fp8 with fp8_recipe per_tensor_delayed: amax of (x, weight, grad_y) over the last
  // amax_history_len training steps, [amax_history_len, 3], row 0 the newest (0 = not seen yet).
  // A registered buffer ("fp8_amax_history"), so checkpoints carry it; undefined otherwise.
  torch::Tensor amax_history;

 private:
  torch::Tensor project(const torch::Tensor& x);             // the GEMM in this layer's precision
  torch::Tensor per_tensor_delayed(const torch::Tensor& x);  // TransformerEngine's classic recipe
  config::PrecisionConfig precision_;
};
TORCH_MODULE(Linear);

}  // namespace ts::nn
