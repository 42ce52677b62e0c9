// FP8 linear layers: each of Fprop, Dgrad and Wgrad is exactly the documented FP8 GEMM (bit for
// bit against the ops composed by hand), gradients are close to fp32 within FP8's precision, the
// delayed-scaling history, and ts::nn::Linear's routing, outlier knob and config checks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>

#include "csrc/config/config.h"
#include "csrc/nn/linear.h"
#include "csrc/ops/fp8.h"

namespace {

using namespace ts::ops;

bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  auto ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.nbytes()) == 0;
}

double rel_err(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got - want).norm() / want.norm()).item<double>();
}

struct Case {
  torch::Tensor x, w, g;  // x [2, 100, K] (M = 200 tokens: a ragged 128-tile along M), w [N, K], g like y
};
Case make_case(int64_t K, int64_t N, uint64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({2, 100, K}), torch::randn({N, K}) * 0.05, torch::randn({2, 100, N})};
}

// Bit for bit: Fprop = gemm(tiles(x), blocks(W)); Dgrad = gemm(tiles(dy), blocks(W^T)) where the
// op reuses W's blocks transposed; Wgrad = gemm(tiles(dy^T), tiles(x^T)) with per-row B scales.
TEST(Fp8Linear, BlockwiseGemmsAreTheDocumentedFp8Gemms) {
  auto c = make_case(200, 136, 11);
  auto x = c.x.clone().requires_grad_(), w = c.w.clone().requires_grad_();
  auto y = fp8_linear(x, w, 128, 13, "align_truncate");
  y.backward(c.g);
  auto gemm = [](const torch::Tensor& a, const torch::Tensor& sa, const torch::Tensor& b, const torch::Tensor& sb) {
    return fp8_gemm_nt(a, sa, b, sb, at::kFloat, 128, 13, "align_truncate");
  };
  auto x2 = c.x.reshape({-1, 200}), g2 = c.g.reshape({-1, 136});
  auto [qx, sx] = fp8_quantize_tilewise(x2);
  auto [qw, sw] = fp8_quantize_blockwise(c.w);
  EXPECT_TRUE(same_bits(y.reshape({-1, 136}), gemm(qx, sx, qw, sw)));
  auto [qg, sg] = fp8_quantize_tilewise(g2);
  auto [qwt, swt] = fp8_quantize_blockwise(c.w.t().contiguous());
  EXPECT_TRUE(same_bits(qwt, qw.t().contiguous())) << "W^T blocks are W's blocks transposed";
  EXPECT_TRUE(same_bits(swt, sw.t().contiguous()));
  EXPECT_TRUE(same_bits(x.grad().reshape({-1, 200}), gemm(qg, sg, qwt, swt)));
  auto [qgt, sgt] = fp8_quantize_tilewise(g2.t().contiguous());
  auto [qxt, sxt] = fp8_quantize_tilewise(x2.t().contiguous());
  EXPECT_EQ(sxt.sizes(), (std::vector<int64_t>{200, 2}));  // tiles along the 200 tokens
  EXPECT_TRUE(same_bits(w.grad(), gemm(qgt, sgt, qxt, sxt)));
}

// FP8 against fp32. E4M3 rounds each operand to 3 mantissa bits: a relative error uniform within
// +-2^-4, whose rms over a random mantissa is ~2^-4 / sqrt(3) ~ 3.6% at worst and ~2.5% on
// average; the product of two operands and a sum of many terms gives ||err|| / ||ref|| around
// sqrt(2) * 2.5% ~ 3.5%. We allow 8% (about 2x margin) for outputs and gradients alike.
TEST(Fp8Linear, BothRecipesAreCloseToFp32) {
  auto c = make_case(256, 192, 12);
  auto ref_x = c.x.clone().requires_grad_(), ref_w = c.w.clone().requires_grad_();
  auto ref = torch::nn::functional::linear(ref_x, ref_w);
  ref.backward(c.g);
  for (bool per_tensor : {false, true}) {
    auto x = c.x.clone().requires_grad_(), w = c.w.clone().requires_grad_();
    auto y = per_tensor ? fp8_linear_per_tensor(x, w, -torch::ones({3}), 128, 13, "align_truncate")
                        : fp8_linear(x, w, 128, 13, "align_truncate");
    y.backward(c.g);
    const std::string what = per_tensor ? "per-tensor" : "blockwise";
    EXPECT_LT(rel_err(y, ref), 0.08) << what;
    EXPECT_LT(rel_err(x.grad(), ref_x.grad()), 0.08) << what;
    EXPECT_LT(rel_err(w.grad(), ref_w.grad()), 0.08) << what;
    EXPECT_GT(rel_err(y, ref), 1e-3) << what << ": FP8 rounding must be visible";
  }
}

// Per-tensor with given scales: values beyond 448 * scale saturate, the rest is e4m3(x / scale).
TEST(Fp8Linear, PerTensorUsesTheGivenScales) {
  auto c = make_case(128, 128, 13);
  const float amax_x = c.x.abs().max().item<float>(), amax_w = c.w.abs().max().item<float>();
  auto jit = fp8_linear_per_tensor(c.x, c.w, -torch::ones({3}));
  auto given = fp8_linear_per_tensor(c.x, c.w, torch::tensor({amax_x / 448.0f, amax_w / 448.0f, 1.0f}));
  EXPECT_TRUE(same_bits(jit, given)) << "just-in-time scale = amax / 448";
  // A stale scale from a history 4x smaller: the large values saturate, the output changes.
  auto stale = fp8_linear_per_tensor(c.x, c.w, torch::tensor({amax_x / 448.0f / 4, amax_w / 448.0f, 1.0f}));
  EXPECT_GT(rel_err(stale, jit), 1e-2);
}

ts::config::PrecisionConfig fp8_precision(const std::string& recipe) {
  ts::config::PrecisionConfig p;
  p.kind = "fp8";
  p.fp8_recipe = recipe;
  p.amax_history_len = 4;
  return p;
}

TEST(Fp8Linear, DelayedScalingRecordsAmaxHistory) {
  ts::nn::Linear lin(64, 32, fp8_precision("per_tensor_delayed"));
  bool found = false;
  for (const auto& b : lin->named_buffers())
    if (b.key() == "fp8_amax_history") found = true;
  ASSERT_TRUE(found) << "the history is a registered buffer (checkpoints carry it)";
  ASSERT_EQ(lin->amax_history.sizes(), (std::vector<int64_t>{4, 3}));
  torch::manual_seed(14);
  std::vector<float> ax;
  for (int step = 0; step < 3; ++step) {
    auto x = torch::randn({8, 64}) * (step + 1);
    auto g = torch::randn({8, 32}) * 0.1 * (step + 1);
    lin->forward(x).backward(g);
    ax.push_back(x.abs().max().item<float>());
    auto h = lin->amax_history;
    EXPECT_EQ(h[0][0].item<float>(), ax.back()) << step;
    EXPECT_EQ(h[0][1].item<float>(), lin->weight.abs().max().item<float>()) << step;
    EXPECT_EQ(h[0][2].item<float>(), g.abs().max().item<float>()) << step;
    for (int s = 0; s < step; ++s) EXPECT_EQ(h[step - s][0].item<float>(), ax[s]) << "rolled, step " << step;
  }
  // Evaluation reads the history but does not record.
  auto before = lin->amax_history.clone();
  lin->eval();
  {
    torch::NoGradGuard ng;
    lin->forward(torch::randn({8, 64}) * 100);
  }
  EXPECT_TRUE(same_bits(lin->amax_history, before));
}

// precision.inject_outliers: exact in fp32; V3's per-token tiles absorb the outlier token in Fprop
// and Dgrad (bit for bit), only Wgrad (tiles along tokens) sees it; per-tensor scaling sees it
// everywhere.
TEST(Fp8Linear, OutlierKnob) {
  auto c = make_case(128, 128, 15);
  auto run = [&](ts::config::PrecisionConfig p, double f) {
    p.inject_outliers = f;
    torch::manual_seed(16);
    ts::nn::Linear lin(128, 128, p);
    {
      torch::NoGradGuard ng;
      lin->weight.copy_(c.w);
    }
    auto x = c.x.clone().requires_grad_();
    auto y = lin->forward(x);
    y.backward(c.g);
    return std::tuple{y.detach(), x.grad(), lin->weight.grad()};
  };
  ts::config::PrecisionConfig fp32;
  // 2^14: the other tokens land ~2^14 below the tensor's amax, in e4m3's subnormal range.
  const double f = 16384;
  auto [y0, dx0, dw0] = run(fp32, 0);
  auto [y1, dx1, dw1] = run(fp32, f);
  EXPECT_TRUE(same_bits(y0, y1) && same_bits(dx0, dx1) && same_bits(dw0, dw1)) << "fp32 is unchanged";
  auto [yb0, dxb0, dwb0] = run(fp8_precision("blockwise"), 0);
  auto [yb1, dxb1, dwb1] = run(fp8_precision("blockwise"), f);
  EXPECT_TRUE(same_bits(yb0, yb1)) << "Fprop: per-token tiles";
  EXPECT_TRUE(same_bits(dxb0, dxb1)) << "Dgrad: per-token tiles";
  EXPECT_FALSE(same_bits(dwb0, dwb1)) << "Wgrad: tiles along tokens";
  auto [yp1, dxp1, dwp1] = run(fp8_precision("per_tensor_delayed"), f);
  (void)dxp1;  // Dgrad: the outlier rows of dy are the tiny ones (divided by f); the rest is unharmed
  // The other tokens' values fall ~2^14 below the tensor's amax, into e4m3's subnormals (3 bits
  // or fewer): per-tensor output errors come out about twice blockwise's pure rounding error.
  EXPECT_GT(rel_err(yp1, y0), 1.5 * rel_err(yb1, y0)) << "per-tensor loses the other tokens' values";
  EXPECT_GT(rel_err(dwp1, dw0), rel_err(dwb1, dw0)) << "per-tensor Wgrad is worse too";
  EXPECT_THROW(run(fp32, 3.0), ts::config::ConfigError);
}

}  // namespace
