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

 private:
};
TORCH_MODULE(Linear);

}  // namespace ts::nn
