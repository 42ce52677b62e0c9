// Routed-expert ops (csrc/ops/moe.h) through the dispatcher: permute/unpermute against a torch
// reference (bitwise where the op is a permutation), grouped_gemm against a per-expert loop of
// matmul, gradients against autograd of the reference in float64, edge cases and error messages.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "csrc/ops/moe.h"

namespace {

struct Case {
  int64_t T, H, K, E;
};

// Random ids that leave some experts empty (ids only from the even experts when E >= 4).
torch::Tensor random_ids(int64_t T, int64_t K, int64_t E, bool leave_empty) {
  auto ids = torch::randint(E, {T, K}, torch::kLong);
  if (leave_empty && E >= 4) ids = torch::div(ids, 2, "floor") * 2;
  return ids;
}

// Reference routing: stable sort of slots by expert.
struct RefRouting {
  torch::Tensor s2t, t2s, offsets;
};
RefRouting ref_routing(const torch::Tensor& ids, int64_t E) {
  auto flat = ids.flatten();
  auto s2t = std::get<1>(flat.sort(/*stable=*/true, 0, false));
  auto t2s = torch::empty_like(s2t).index_put_({s2t}, torch::arange(s2t.numel(), torch::kLong));
  auto counts = torch::bincount(flat, {}, E);
  auto offsets = torch::cat({torch::zeros({1}, torch::kLong), counts.cumsum(0)});
  return {s2t, t2s, offsets};
}

// The reference composition, in any dtype, differentiable in x, w_gate and w.
torch::Tensor ref_permute(const torch::Tensor& x, const torch::Tensor& s2t, int64_t K) {
  return x.index_select(0, torch::div(s2t, K, "floor"));
}
torch::Tensor ref_unpermute(const torch::Tensor& ys, const torch::Tensor& t2s, const torch::Tensor& w) {
  const int64_t T = w.size(0), K = w.size(1);
  return (ys.index_select(0, t2s).view({T, K, ys.size(1)}) * w.unsqueeze(-1)).sum(1);
}
torch::Tensor ref_grouped_gemm(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& offsets) {
  std::vector<torch::Tensor> parts;
  for (int64_t e = 0; e < w.size(0); ++e) {
    const int64_t b = offsets[e].item<int64_t>(), n = offsets[e + 1].item<int64_t>() - b;
    parts.push_back(torch::matmul(x.narrow(0, b, n), w[e].t()));
  }
  return torch::cat(parts);
}

double max_abs(const torch::Tensor& t) { return t.numel() ? t.abs().max().item<double>() : 0.0; }

class MoeOps : public ::testing::TestWithParam<Case> {};

TEST_P(MoeOps, PermuteIsBitwiseTheStableSort) {
  const auto [T, H, K, E] = GetParam();
  torch::manual_seed(T * 31 + K);
  auto x = torch::randn({T, H});
  auto ids = random_ids(T, K, E, true);
  auto [xs, s2t, offs] = ts::ops::moe_permute(x, ids, E);
  auto ref = ref_routing(ids, E);
  EXPECT_TRUE(torch::equal(s2t, ref.s2t));
  EXPECT_TRUE(torch::equal(offs, ref.offsets));
  EXPECT_TRUE(torch::equal(xs, ref_permute(x, ref.s2t, K)));
  ASSERT_EQ(xs.sizes(), (std::vector<int64_t>{T * K, H}));
}

TEST_P(MoeOps, UnpermuteMatchesTheWeightedSum) {
  const auto [T, H, K, E] = GetParam();
  torch::manual_seed(T * 17 + K);
  auto ids = random_ids(T, K, E, false);
  auto ref = ref_routing(ids, E);
  auto ys = torch::randn({T * K, H});
  auto w = torch::rand({T, K}) + 0.1;
  auto y = ts::ops::moe_unpermute(ys, ref.s2t, w);
  // Summed in order k in fp32 by the kernel; the reference sums K products in double. Each term
  // has error <= eps|w y| and the sum accumulates K of them: bound K * eps * max|w y| * 2.
  auto yd = ref_unpermute(ys.to(torch::kDouble), ref.t2s, w.to(torch::kDouble));
  const double bound = 2.0 * K * 1.2e-7 * max_abs(w) * max_abs(ys);
  EXPECT_LE(max_abs(y.to(torch::kDouble) - yd), bound);
  if (K == 1) {
    EXPECT_TRUE(torch::equal(y, ys.index_select(0, ref.t2s) * w));  // one product: bitwise
  }
}

TEST_P(MoeOps, GroupedGemmMatchesPerExpertMatmul) {
  const auto [T, H, K, E] = GetParam();
  torch::manual_seed(T + H + K + E);
  const int64_t N = 24;
  auto ids = random_ids(T, K, E, true);
  auto ref = ref_routing(ids, E);
  auto x = torch::randn({T * K, H});
  auto w = torch::randn({E, N, H});
  auto out = ts::ops::grouped_gemm(x, w, ref.offsets);
  auto outd = ref_grouped_gemm(x.to(torch::kDouble), w.to(torch::kDouble), ref.offsets);
  // fp32 dot products of length H with N(0,1) entries: error ~ H * eps * |x||w| worst case.
  const double tol = H * 1.2e-7 * 16;
  EXPECT_LE(max_abs(out.to(torch::kDouble) - outd), tol);
}

TEST_P(MoeOps, GradientsMatchAutogradOfTheReference) {
  const auto [T, H, K, E] = GetParam();
  torch::manual_seed(7 * T + E);
  const int64_t N = 12;
  auto x = torch::randn({T, H}).requires_grad_();
  auto w = torch::randn({E, N, H}).mul_(0.3).requires_grad_();
  auto gate = (torch::rand({T, K}) + 0.1).requires_grad_();
  auto ids = random_ids(T, K, E, true);
  auto [xs, s2t, offs] = ts::ops::moe_permute(x, ids, E);
  auto y = ts::ops::moe_unpermute(ts::ops::grouped_gemm(xs, w, offs), s2t, gate);  // [T, N]
  auto g = torch::randn({T, N});
  y.backward(g);

  auto xd = x.detach().to(torch::kDouble).requires_grad_();
  auto wd = w.detach().to(torch::kDouble).requires_grad_();
  auto gd = gate.detach().to(torch::kDouble).requires_grad_();
  auto ref = ref_routing(ids, E);
  auto yd = ref_unpermute(ref_grouped_gemm(ref_permute(xd, ref.s2t, K), wd, ref.offsets), ref.t2s, gd);
  yd.backward(g.to(torch::kDouble));
  // Every gradient is a sum of at most max(T*K, H, N) fp32 products of O(1) terms.
  const double tol = 1.2e-7 * 64 * std::max<int64_t>({T * K, H, N});
  auto err = [](const torch::Tensor& a, const torch::Tensor& b) { return max_abs(a.to(torch::kDouble) - b); };
  EXPECT_LE(err(y.detach(), yd.detach()), tol);
  EXPECT_LE(err(x.grad(), xd.grad()), tol);
  EXPECT_LE(err(w.grad(), wd.grad()), tol);
  EXPECT_LE(err(gate.grad(), gd.grad()), tol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MoeOps,
                         ::testing::Values(Case{37, 40, 2, 8}, Case{64, 16, 8, 32}, Case{50, 33, 1, 4},
                                           Case{0, 16, 2, 4}, Case{5, 8, 3, 1}),
                         [](const auto& info) {
                           const auto& c = info.param;
                           return "T" + std::to_string(c.T) + "_H" + std::to_string(c.H) + "_K" + std::to_string(c.K) +
                                  "_E" + std::to_string(c.E);
                         });

TEST(MoeOpsErrors, OutOfRangeExpertIdNamesTheSlot) {
  auto x = torch::randn({3, 4});
  auto ids = torch::tensor({0, 1, 2, 9, 1, 1}, torch::kLong).view({3, 2});
  try {
    ts::ops::moe_permute(x, ids, 8);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tinyseek.moe_permute: argument 'topk_ids': expert id 9 at [1, 1] is "
                                         "outside [0, 8)"),
              std::string::npos)
        << e.what();
  }
  auto neg = torch::tensor({0, -1}, torch::kLong).view({2, 1});
  EXPECT_THROW(ts::ops::moe_permute(torch::randn({2, 4}), neg, 8), c10::Error);
}

TEST(MoeOpsErrors, ShapeAndIndexChecks) {
  EXPECT_THROW(ts::ops::moe_permute(torch::randn({3, 4}), torch::zeros({2, 2}, torch::kLong), 4), c10::Error);
  EXPECT_THROW(ts::ops::moe_permute(torch::randn({3, 4}), torch::zeros({3, 2}, torch::kInt), 4), c10::Error);
  // A sorted_to_token that is not a permutation.
  auto dup = torch::tensor({0, 0, 1, 2}, torch::kLong);
  EXPECT_THROW(ts::ops::moe_unpermute(torch::randn({4, 3}), dup, torch::rand({2, 2})), c10::Error);
  // Offsets that do not cover the rows.
  auto bad = torch::tensor({0, 2, 3}, torch::kLong);
  try {
    ts::ops::grouped_gemm(torch::randn({4, 3}), torch::randn({2, 5, 3}), bad);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("argument 'expert_offsets'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ts::ops::grouped_gemm(torch::randn({4, 3}), torch::randn({2, 5, 4}), torch::tensor({0, 2, 4})),
               c10::Error);
}

TEST(MoeOpsMeta, ShapesWithoutData) {
  auto meta = torch::TensorOptions().device(torch::kMeta);
  auto [xs, s2t, offs] =
      ts::ops::moe_permute(torch::empty({6, 5}, meta), torch::empty({6, 3}, meta.dtype(torch::kLong)), 4);
  EXPECT_EQ(xs.sizes(), (std::vector<int64_t>{18, 5}));
  EXPECT_EQ(s2t.sizes(), (std::vector<int64_t>{18}));
  EXPECT_EQ(offs.sizes(), (std::vector<int64_t>{5}));
  auto y = ts::ops::moe_unpermute(xs, s2t, torch::empty({6, 3}, meta));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{6, 5}));
  auto out = ts::ops::grouped_gemm(xs, torch::empty({4, 7, 5}, meta), offs);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{18, 7}));
}

}  // namespace
