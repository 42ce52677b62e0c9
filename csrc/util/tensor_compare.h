// ||a - b|| / ||b|| in float64 (||a - b|| when b is zero): the parity measure of the
// distributed checks (pipeline vs sequential training, expert-parallel vs one rank).
#pragma once

#include <torch/torch.h>

namespace ts::util {

inline double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const auto bd = b.to(torch::kDouble);
  const double den = bd.norm().item<double>();
  const double num = (a.to(torch::kDouble) - bd).norm().item<double>();
  return den > 0 ? num / den : num;
}

}  // namespace ts::util
