// The op layer: dispatch, checks with clear messages, autograd against the torch composition.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "csrc/ops/rms_norm.h"

namespace {

torch::Tensor reference(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  auto xd = x.to(torch::kDouble), wd = w.to(torch::kDouble);
  return xd * torch::rsqrt(xd.pow(2).mean(-1, true) + eps) * wd;
}

TEST(RmsNormOp, ForwardAndBackwardMatchFloat64Composition) {
  torch::manual_seed(3);
  auto x = (torch::randn({3, 5, 96}) * 2).requires_grad_(true);
  auto w = (torch::rand({96}) + 0.5).requires_grad_(true);
  auto y = ts::ops::rms_norm(x, w, 1e-6);
  auto g = torch::randn_like(y);
  y.backward(g);
  auto xd = x.detach().to(torch::kDouble).requires_grad_(true);
  auto wd = w.detach().to(torch::kDouble).requires_grad_(true);
  auto yd = reference(xd, wd, 1e-6);
  yd.backward(g.to(torch::kDouble));
  // fp32 outputs of O(1) values: a few ulp; gradients sum 96 terms.
  EXPECT_TRUE(torch::allclose(y.to(torch::kDouble), yd, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(x.grad().to(torch::kDouble), xd.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(w.grad().to(torch::kDouble), wd.grad(), 1e-5, 1e-4));
}

TEST(RmsNormOp, ClearErrors) {
  auto x = torch::randn({4, 8});
  try {
    ts::ops::rms_norm(x, torch::ones({7}), 1e-6);
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("tinyseek.rms_norm: argument 'weight': expected shape [8]"),
              std::string::npos)
        << e.what_without_backtrace();
  }
  EXPECT_THROW(ts::ops::rms_norm(x, torch::ones({8}), 0.0), c10::Error);
  EXPECT_THROW(ts::ops::rms_norm(x.to(torch::kDouble), torch::ones({8}), 1e-6), c10::Error);
}

}  // namespace
