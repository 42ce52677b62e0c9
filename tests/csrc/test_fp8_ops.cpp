// The FP8 op layer: the quantizers against the torch composition they replace (bit for bit), the
// GEMM against float64, per-row B scales, bf16 output, Meta shapes, and argument errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "csrc/ops/fp8.h"

namespace {

using ts::ops::fp8_dequantize;
using ts::ops::fp8_gemm_nt;
using ts::ops::fp8_quantize_blockwise;
using ts::ops::fp8_quantize_tilewise;

// The composition the tilewise op replaces: per 1 x G tile, scale = max(amax, 1e-4) / 448 and
// q = e4m3(x / scale); clamping first makes torch's cast saturate like the kernel (x / scale can
// round a hair above 448). K is a multiple of G here.
std::pair<torch::Tensor, torch::Tensor> composed_tilewise(const torch::Tensor& x, int64_t G) {
  auto t = x.view({x.size(0), -1, G});
  auto scale = t.abs().amax(-1).clamp_min(1e-4) / 448.0;
  auto q = (t / scale.unsqueeze(-1)).clamp(-448, 448).to(torch::kFloat8_e4m3fn);
  return {q.view_as(x), scale};
}

bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  auto ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.nbytes()) == 0;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "no error";
}

TEST(Fp8Ops, TilewiseMatchesTorchCompositionBitForBit) {
  torch::manual_seed(1);
  auto x = torch::randn({37, 384}) * torch::rand({37, 1}) * 10;
  auto [q, s] = fp8_quantize_tilewise(x);
  EXPECT_EQ(q.scalar_type(), torch::kFloat8_e4m3fn);
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{37, 3}));
  auto [cq, cs] = composed_tilewise(x, 128);
  EXPECT_TRUE(same_bits(s, cs));
  EXPECT_TRUE(same_bits(q, cq));
  // Non-contiguous input: the op makes it contiguous.
  auto xt = torch::randn({256, 37}).t();
  auto [qt, st] = fp8_quantize_tilewise(xt);
  auto [qc, sc] = fp8_quantize_tilewise(xt.contiguous());
  EXPECT_TRUE(same_bits(qt, qc));
  EXPECT_TRUE(same_bits(st, sc));
}

TEST(Fp8Ops, RaggedTilesAndBlocks) {
  torch::manual_seed(2);
  auto w = torch::randn({130, 200});
  auto [q, s] = fp8_quantize_blockwise(w);
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{2, 2}));
  // Block (1, 1) is rows 128..129, columns 128..199: its scale uses only those elements.
  auto amax = w.slice(0, 128).slice(1, 128).abs().max().item<float>();
  EXPECT_EQ(s[1][1].item<float>(), amax / 448.0f);
  // Dequantization: one fp32 multiply per element.
  auto d = fp8_dequantize(q, s, 128, 128);
  auto want =
      q.to(torch::kFloat) * s.repeat_interleave(128, 0).slice(0, 0, 130).repeat_interleave(128, 1).slice(1, 0, 200);
  EXPECT_TRUE(same_bits(d, want));
  // E4M3 keeps 3 mantissa bits: |w - d| <= 2^-4 |w| for normal values, plus half the subnormal
  // step (2^-10 * scale) near zero.
  auto bound = w.abs() * std::ldexp(1.0, -4) + s.max() * std::ldexp(1.0, -10);
  EXPECT_TRUE(((w - d).abs() <= bound).all().item<bool>());
}

TEST(Fp8Ops, Pow2ScalesArePowersOfTwo) {
  auto x = torch::randn({4, 256}) * 3;
  auto [q, s] = fp8_quantize_tilewise(x, 128, true);
  auto m = torch::frexp(s);
  EXPECT_TRUE((std::get<0>(m) == 0.5).all().item<bool>());
  EXPECT_TRUE((fp8_dequantize(q, s, 1, 128) - x).abs().le(x.abs() * 0.0625 + 1e-6).all().item<bool>());
}

// b = 23, promotion every 128: each output is the exact sum up to fp32 rounding of the window
// sums and promotions, |err| <= (128 + KB + 2) 2^-24 sum|A B| (first-order recursive-summation
// bound, as in the kernel tests).
void expect_gemm_close(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b, int64_t K) {
  auto ad = a.to(torch::kDouble), bd = b.to(torch::kDouble);
  auto ref = ad.matmul(bd.t()), abs = ad.abs().matmul(bd.abs().t());
  const double terms = 128 + (K + 127) / 128 + 2;
  EXPECT_TRUE(((out.to(torch::kDouble) - ref).abs() <= abs * terms * std::ldexp(1.0, -24)).all().item<bool>());
}

TEST(Fp8Ops, GemmMatchesFloat64OfDequantizedOperands) {
  torch::manual_seed(3);
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 16}, {33, 130, 200}, {64, 64, 384}}) {
    auto [qa, sa] = fp8_quantize_tilewise(torch::randn({M, K}));
    auto [qb, sb] = fp8_quantize_blockwise(torch::randn({N, K}));
    auto out = fp8_gemm_nt(qa, sa, qb, sb);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{M, N}));
    expect_gemm_close(out, fp8_dequantize(qa, sa, 1, 128), fp8_dequantize(qb, sb, 128, 128), K);
    // bf16 output: the fp32 result rounded to nearest even.
    auto bf = fp8_gemm_nt(qa, sa, qb, sb, at::kBFloat16);
    EXPECT_EQ(bf.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(same_bits(bf, out.to(torch::kBFloat16)));
  }
}

TEST(Fp8Ops, GemmWithPerRowBScales) {
  torch::manual_seed(4);
  const int64_t M = 9, N = 140, K = 260;
  auto [qa, sa] = fp8_quantize_tilewise(torch::randn({M, K}));
  auto [qb, sb] = fp8_quantize_tilewise(torch::randn({N, K}) * torch::rand({N, 1}) * 4);
  ASSERT_EQ(sb.size(0), N);  // [N, ceil(K/128)]: per-row tiles
  auto out = fp8_gemm_nt(qa, sa, qb, sb);
  expect_gemm_close(out, fp8_dequantize(qa, sa, 1, 128), fp8_dequantize(qb, sb, 1, 128), K);
}

TEST(Fp8Ops, LimitedAccumulatorIsWorseWithoutPromotion) {
  torch::manual_seed(5);
  const int64_t K = 4096;
  auto [qa, sa] = fp8_quantize_tilewise(torch::randn({16, K}));
  auto [qb, sb] = fp8_quantize_blockwise(torch::randn({16, K}));
  auto ref = fp8_gemm_nt(qa, sa, qb, sb);  // fp32
  auto err = [&](int64_t P, const char* model) {
    return ((fp8_gemm_nt(qa, sa, qb, sb, at::kFloat, P, 13, model) - ref).norm() / ref.norm()).item<double>();
  };
  for (const char* model : {"align_truncate", "truncate_sum"}) EXPECT_LT(err(128, model) * 4, err(0, model)) << model;
  // 23 bits is fp32 whatever the model.
  EXPECT_TRUE(same_bits(fp8_gemm_nt(qa, sa, qb, sb, at::kFloat, 128, 23, "align_truncate"), ref));
}

TEST(Fp8Ops, MetaShapes) {
  auto x = torch::empty({5, 300}, torch::TensorOptions().device(torch::kMeta));
  auto [q, s] = fp8_quantize_tilewise(x);
  EXPECT_TRUE(q.is_meta());
  EXPECT_EQ(q.scalar_type(), torch::kFloat8_e4m3fn);
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{5, 3}));
  auto [qw, sw] = fp8_quantize_blockwise(torch::empty({200, 300}, x.options()));
  EXPECT_EQ(sw.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(fp8_gemm_nt(q, s, qw, sw, at::kBFloat16).sizes(), (std::vector<int64_t>{5, 200}));
  EXPECT_EQ(fp8_dequantize(qw, sw, 128, 128).scalar_type(), torch::kFloat);
  auto w = torch::empty({7, 300}, x.options());
  EXPECT_EQ(ts::ops::fp8_linear(torch::empty({2, 3, 300}, x.options()), w).sizes(), (std::vector<int64_t>{2, 3, 7}));
}

TEST(Fp8Ops, ErrorsNameTheArgument) {
  auto [qa, sa] = fp8_quantize_tilewise(torch::randn({4, 256}));
  auto [qb, sb] = fp8_quantize_blockwise(torch::randn({8, 256}));
  auto has = [](const std::string& msg, const std::string& part) { return msg.find(part) != std::string::npos; };
  auto m = error_of([&] { fp8_gemm_nt(qa.to(torch::kFloat), sa, qb, sb); });
  EXPECT_TRUE(has(m, "tinyseek.fp8_gemm_nt: argument 'a_q': expected dtype Float8_e4m3fn")) << m;
  m = error_of([&] { fp8_gemm_nt(qa, sa.slice(1, 0, 1), qb, sb); });
  EXPECT_TRUE(has(m, "argument 'a_scale': expected shape [4, 2]")) << m;
  m = error_of([&] { fp8_gemm_nt(qa, sa, qb, sa); });
  EXPECT_TRUE(has(m, "argument 'b_scale': expected shape [1, 2]")) << m;
  m = error_of([&] { fp8_gemm_nt(qa, sa, qb.slice(1, 0, 128), sb); });
  EXPECT_TRUE(has(m, "argument 'b_q': expected [N, K] with K = 256")) << m;
  m = error_of([&] { fp8_gemm_nt(qa, sa, qb, sb, at::kFloat, 128, 0); });
  EXPECT_TRUE(has(m, "argument 'accum_mantissa_bits'")) << m;
  m = error_of([&] { fp8_gemm_nt(qa, sa, qb, sb, at::kFloat, 128, 13, "round"); });
  EXPECT_TRUE(has(m, "argument 'accum_model': expected 'align_truncate' or 'truncate_sum'")) << m;
  m = error_of([&] { fp8_gemm_nt(qa, sa, qb, sb, at::kHalf); });
  EXPECT_TRUE(has(m, "argument 'out_dtype'")) << m;
  m = error_of([&] { fp8_quantize_tilewise(torch::randn({4, 256}, torch::kDouble)); });
  EXPECT_TRUE(has(m, "tinyseek.fp8_quantize_tilewise: argument 'x': expected dtype Float")) << m;
  m = error_of([&] { fp8_quantize_blockwise(torch::randn({4, 4, 4})); });
  EXPECT_TRUE(has(m, "tinyseek.fp8_quantize_blockwise: argument 'w': expected a 2-d tensor")) << m;
  m = error_of([&] { fp8_dequantize(qa, sa, 1, 64); });
  EXPECT_TRUE(has(m, "tinyseek.fp8_dequantize: argument 'scale': expected shape [4, 4]")) << m;
  m = error_of([&] { ts::ops::fp8_linear(torch::randn({3, 100}), torch::randn({5, 99})); });
  EXPECT_TRUE(has(m, "tinyseek.fp8_linear: argument 'weight': expected [N, K] with K = 100")) << m;
}

}  // namespace
