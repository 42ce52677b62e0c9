#include "csrc/nn/linear.h"

#include <cmath>

namespace ts::nn {

LinearImpl::LinearImpl(int64_t in, int64_t out, const config::PrecisionConfig& precision)
    : in_features(in), out_features(out), kind(precision.kind) {
  // Kaiming-uniform like torch.nn.Linear; the transformer re-initializes with its own scheme.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = register_parameter("weight", torch::empty({out, in}).uniform_(-bound, bound));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) { return torch::nn::functional::linear(x, weight); }

}  // namespace ts::nn
