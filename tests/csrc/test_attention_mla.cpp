// MLA: the module against a float64 transcription of DeepSeek-V2's equations, the naive and the
// absorbed decode paths against each other and the full forward, and the mla_decode op against
// a float64 reference over a paged cache whose unused slots hold NaN.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "csrc/nn/attention/mla.h"
#include "csrc/ops/mla_decode.h"
#include "tests/csrc/test_attention_util.h"

namespace {

using torch::indexing::None;
using torch::indexing::Slice;
using ts::nn::MlaDecodePath;
using ts::nn::MultiHeadLatentAttentionImpl;
using ts::test::rel_max_diff;
using ts::test::tiny_attention_config;

torch::Tensor dbl(const torch::Tensor& t) { return t.detach().to(torch::kDouble); }

torch::Tensor rms(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * dbl(w);
}

// Rotary pairs (x[2i], x[2i+1]) at positions 0..T-1 of x [B, T, ..., d], angles in double.
torch::Tensor rope_ref(const torch::Tensor& x, double theta) {
  const int64_t T = x.size(1), d = x.size(-1);
  auto inv = torch::pow(theta, -torch::arange(0, d, 2, torch::kDouble) / static_cast<double>(d));
  auto ang = torch::outer(torch::arange(T, torch::kDouble), inv);
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = T;
  shape.back() = d / 2;
  auto c = torch::cos(ang).view(shape), s = torch::sin(ang).view(shape);
  auto x0 = x.index({"...", Slice(0, None, 2)}), x1 = x.index({"...", Slice(1, None, 2)});
  return torch::stack({x0 * c - x1 * s, x0 * s + x1 * c}, -1).flatten(-2);
}

// The equations of DeepSeek-V2 §2.1 head by head, in float64.
torch::Tensor mla_reference(MultiHeadLatentAttentionImpl& m, const ts::config::Config& cfg, const torch::Tensor& x) {
  const auto& a = cfg.model.attention;
  const int64_t B = x.size(0), T = x.size(1), H = cfg.model.n_heads;
  const int64_t dc = a.kv_lora_rank, dn = a.qk_nope_head_dim, dr = a.qk_rope_head_dim, dv = a.v_head_dim;
  const double eps = cfg.model.norm_eps, theta = cfg.model.rope_theta;
  auto X = dbl(x);
  auto q = a.q_lora_rank ? torch::matmul(rms(torch::matmul(X, dbl(m.wq_a->weight).t()), m.q_norm->weight, eps),
                                         dbl(m.wq_b->weight).t())
                         : torch::matmul(X, dbl(m.wq->weight).t());
  q = q.view({B, T, H, dn + dr});
  auto kv = torch::matmul(X, dbl(m.wkv_a->weight).t());
  auto c = rms(kv.narrow(-1, 0, dc), m.kv_norm->weight, eps);                 // c_t
  auto k_r = rope_ref(kv.narrow(-1, dc, dr).unsqueeze(2), theta).squeeze(2);  // k^R_t, one per token
  auto w = dbl(m.wkv_b->weight).view({H, dn + dv, dc});
  auto causal = torch::ones({T, T}, torch::kBool).tril();
  const double scale = 1.0 / std::sqrt(static_cast<double>(dn + dr));
  std::vector<torch::Tensor> heads;
  for (int64_t i = 0; i < H; ++i) {
    auto k_c = torch::matmul(c, w[i].narrow(0, 0, dn).t());  // W_UK,i c_t
    auto v = torch::matmul(c, w[i].narrow(0, dn, dv).t());   // W_UV,i c_t
    auto k = torch::cat({k_c, k_r}, -1);
    auto qi = torch::cat({q.select(2, i).narrow(-1, 0, dn), rope_ref(q.select(2, i).narrow(-1, dn, dr), theta)}, -1);
    auto s = torch::matmul(qi, k.transpose(1, 2)) * scale;
    s = s.masked_fill(~causal, -std::numeric_limits<double>::infinity());
    heads.push_back(torch::matmul(torch::softmax(s, -1), v));
  }
  return torch::matmul(torch::cat(heads, -1), dbl(m.wo->weight).t());
}

TEST(Mla, ForwardMatchesTheEquationsInFloat64) {
  for (int64_t q_lora : {0, 12}) {
    SCOPED_TRACE(q_lora);
    torch::manual_seed(7);
    auto cfg = tiny_attention_config("mla", q_lora);
    MultiHeadLatentAttentionImpl m(cfg);
    {
      torch::NoGradGuard ng;  // norms away from 1 so that a missing norm shows
      m.kv_norm->weight.uniform_(0.5, 1.5);
      if (q_lora) m.q_norm->weight.uniform_(0.5, 1.5);
    }
    const int64_t T = 11;
    auto rope = ts::nn::Rope::make(m.rope_dim(), T, cfg.model.rope_theta, torch::kCPU);
    auto x = torch::randn({2, T, cfg.model.d_model});
    auto y = m.forward(x, rope);
    // fp32 forward (rope tables rounded to fp32) against float64: ~1e-6 relative.
    EXPECT_LT(rel_max_diff(y, mla_reference(m, cfg, x)), 2e-5);
  }
}

TEST(Mla, ParameterNamesMatchThePythonModule) {
  auto names = [](const ts::config::Config& cfg) {
    std::vector<std::string> n;
    for (const auto& p : MultiHeadLatentAttentionImpl(cfg).named_parameters()) n.push_back(p.key());
    std::sort(n.begin(), n.end());
    return n;
  };
  EXPECT_EQ(names(tiny_attention_config("mla")),
            (std::vector<std::string>{"kv_norm.weight", "wkv_a.weight", "wkv_b.weight", "wo.weight", "wq.weight"}));
  EXPECT_EQ(names(tiny_attention_config("mla", 12)),
            (std::vector<std::string>{"kv_norm.weight", "q_norm.weight", "wkv_a.weight", "wkv_b.weight", "wo.weight",
                                      "wq_a.weight", "wq_b.weight"}));
}

// Both decode paths over their own paged caches, for a ragged prefill (one step) and then one
// token per step with sequences finishing at different times; each output row must agree
// between the paths and with the uncached forward of that sequence.
TEST(Mla, NaiveAndAbsorbedPathsAgreeOnRaggedPrefillAndDecode) {
  for (int64_t q_lora : {0, 12}) {
    SCOPED_TRACE(q_lora);
    torch::manual_seed(11);
    auto cfg = tiny_attention_config("mla", q_lora);
    MultiHeadLatentAttentionImpl m(cfg);
    m.eval();
    const int64_t B = 3, T = 35, D = cfg.model.d_model;
    const std::vector<int64_t> lens = {35, 9, 22}, prompt = {17, 9, 4};
    auto x = torch::randn({B, T, D});
    auto rope = ts::nn::Rope::make(m.rope_dim(), T, cfg.model.rope_theta, torch::kCPU);
    auto make_cache = [&] { return ts::nn::KVCache(1, m.cache_planes(), B, T, 16, {}, true, 3); };
    ts::nn::KVCache naive_cache = make_cache(), absorbed_cache = make_cache();
    std::vector<int64_t> pos(B, 0);
    std::vector<std::vector<torch::Tensor>> rows(B);
    torch::NoGradGuard ng;
    auto step = [&](int64_t S, const std::vector<int64_t>& n_new) {
      auto xs = torch::zeros({B, S, D});
      for (int64_t b = 0; b < B; ++b)
        if (n_new[b]) xs[b].narrow(0, 0, n_new[b]).copy_(x[b].narrow(0, pos[b], n_new[b]));
      std::vector<torch::Tensor> outs;
      for (auto [path, cache] :
           {std::pair{MlaDecodePath::kNaive, &naive_cache}, std::pair{MlaDecodePath::kAbsorbed, &absorbed_cache}}) {
        m.decode_path = path;
        cache->begin_step(n_new, S);
        outs.push_back(m.forward_cached(xs, rope, *cache, 0));
        cache->end_step();
      }
      // Same function, fp32, different association (d_c-wide latent dot products vs per-head ones).
      EXPECT_LT(rel_max_diff(outs[1], outs[0]), 2e-5);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t s = 0; s < n_new[b]; ++s) rows[b].push_back(outs[1][b][s]);
        // Padding rows are zero on both paths.
        if (n_new[b] < S) {
          EXPECT_EQ(outs[1][b].narrow(0, n_new[b], S - n_new[b]).abs().max().item<float>(), 0.0f);
        }
        pos[b] += n_new[b];
      }
    };
    step(17, prompt);
    for (bool more = true; more;) {
      std::vector<int64_t> n(B);
      more = false;
      for (int64_t b = 0; b < B; ++b) more |= (n[b] = pos[b] < lens[b]) != 0;
      if (more) step(1, n);
    }
    for (int64_t b = 0; b < B; ++b)
      EXPECT_LT(rel_max_diff(torch::stack(rows[b]), m.forward(x[b].narrow(0, 0, lens[b]).unsqueeze(0), rope)[0]), 2e-5)
          << "sequence " << b;
  }
}

// ---- the op -------------------------------------------------------------------------------

struct PagedCase {
  torch::Tensor q, cache, table, lens;
  int64_t dv;
  double scale;
};

// B sequences of the given lengths in a pool of shuffled blocks; unused slots, unused blocks and
// the block-table entries past each sequence's last block are poisoned.
PagedCase make_case(const std::vector<int32_t>& lens, int64_t S, int64_t H, int64_t dqk, int64_t dv, int64_t bs,
                    torch::ScalarType dt = torch::kFloat) {
  const int64_t B = static_cast<int64_t>(lens.size());
  int64_t mb = 1;
  for (auto l : lens) mb = std::max<int64_t>(mb, (l + bs - 1) / bs);
  const int64_t nb = B * mb + 2;  // two blocks nobody uses
  auto perm = torch::randperm(nb, torch::kInt32);
  auto table = torch::full({B, mb}, 1 << 30, torch::kInt32);
  auto cache = torch::full({nb, bs, 1, dqk}, std::numeric_limits<float>::quiet_NaN());
  int64_t next = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < (lens[b] + bs - 1) / bs; ++i) {
      const int32_t blk = perm[next++].item<int32_t>();
      table[b][i] = blk;
      const int64_t rows = std::min<int64_t>(bs, lens[b] - i * bs);
      cache[blk].narrow(0, 0, rows).copy_(torch::randn({rows, 1, dqk}));
    }
  return {torch::randn({B, S, H, dqk}).to(dt), cache.to(dt), table, torch::tensor(lens, torch::kInt32), dv, 0.37};
}

// Float64: every query s sees positions [0, L - S + s]; none -> out 0, lse -inf.
std::pair<torch::Tensor, torch::Tensor> op_reference(const PagedCase& c) {
  const int64_t B = c.q.size(0), S = c.q.size(1), H = c.q.size(2), bs = c.cache.size(1);
  auto out = torch::zeros({B, S, H, c.dv}, torch::kDouble);
  auto lse = torch::full({B, H, S}, -std::numeric_limits<double>::infinity(), torch::kDouble);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = c.lens[b].item<int64_t>();
    std::vector<torch::Tensor> rows;
    for (int64_t p = 0; p < L; ++p) rows.push_back(dbl(c.cache[c.table[b][p / bs].item<int64_t>()][p % bs][0]));
    for (int64_t s = 0; s < S; ++s) {
      const int64_t visible = L - S + s + 1;
      if (visible <= 0) continue;
      auto k = torch::stack(std::vector<torch::Tensor>(rows.begin(), rows.begin() + visible));  // [n, dqk]
      auto sc = torch::matmul(dbl(c.q[b][s]), k.t()) * c.scale;                                 // [H, n]
      lse[b].select(1, s).copy_(torch::logsumexp(sc, -1));
      out[b][s].copy_(torch::matmul(torch::softmax(sc, -1), k.narrow(1, 0, c.dv)));
    }
  }
  return {out, lse};
}

TEST(MlaDecodeOp, MatchesFloat64ReferenceOverPoisonedPagedCache) {
  torch::manual_seed(21);
  for (int64_t S : {1, 3}) {
    for (int64_t bs : {16, 64}) {
      SCOPED_TRACE(testing::Message() << "S_q " << S << " block_size " << bs);
      // Lengths: empty, shorter than S_q (the first queries see nothing), partial and whole blocks.
      auto c = make_case({0, 2, 70, 130}, S, 4, 40, 32, bs);
      auto [out, lse] = ts::ops::mla_decode(c.q, c.cache, c.table, c.lens, c.dv, c.scale);
      auto [ref_out, ref_lse] = op_reference(c);
      ASSERT_EQ(out.sizes(), ref_out.sizes());
      ASSERT_EQ(lse.sizes(), ref_lse.sizes());
      ASSERT_EQ(lse.scalar_type(), torch::kFloat);
      EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
      // fp32 accumulation over at most 130 rows of 40 products: 1e-5 relative is ample.
      EXPECT_LT(rel_max_diff(out, ref_out), 1e-5);
      auto fin = torch::isfinite(ref_lse);
      EXPECT_TRUE(torch::equal(torch::isfinite(lse), fin));
      EXPECT_LT(rel_max_diff(lse.masked_select(fin), ref_lse.masked_select(fin)), 1e-5);
    }
  }
}

TEST(MlaDecodeOp, Bf16OnCpu) {
  torch::manual_seed(22);
  auto c = make_case({33, 64}, 2, 3, 24, 16, 16, torch::kBFloat16);
  auto [out, lse] = ts::ops::mla_decode(c.q, c.cache, c.table, c.lens, c.dv, c.scale);
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  // Reference on the same bf16 inputs; out is rounded to bf16 (2^-8 relative).
  EXPECT_LT(rel_max_diff(out, op_reference(c).first), 1e-2);
}

TEST(MlaDecodeOp, EveryArgumentIsCheckedByName) {
  torch::manual_seed(23);
  auto c = make_case({20, 40}, 1, 2, 24, 16, 16);
  auto expect_error = [&](const std::string& needle, auto&& call) {
    try {
      call();
      ADD_FAILURE() << "no error, expected " << needle;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find(needle), std::string::npos) << e.what_without_backtrace();
    }
  };
  const std::string p = "tinyseek.mla_decode: argument '";
  auto call = [](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& t, const torch::Tensor& l,
                 int64_t dv, double sc) { ts::ops::mla_decode(q, k, t, l, dv, sc); };
  expect_error(p + "q': expected a 4-d", [&] { call(c.q[0], c.cache, c.table, c.lens, c.dv, c.scale); });
  expect_error(p + "q': expected float32 or bfloat16 on CPU",
               [&] { call(c.q.to(torch::kDouble), c.cache.to(torch::kDouble), c.table, c.lens, c.dv, c.scale); });
  expect_error(p + "kv_cache': expected the dtype of q",
               [&] { call(c.q, c.cache.to(torch::kBFloat16), c.table, c.lens, c.dv, c.scale); });
  expect_error(p + "kv_cache': expected one KV head", [&] {
    call(c.q, c.cache.expand({-1, -1, 2, -1}).contiguous(), c.table, c.lens, c.dv, c.scale);
  });
  expect_error(p + "kv_cache': expected D_qk = 24",
               [&] { call(c.q, c.cache.narrow(3, 0, 20).contiguous(), c.table, c.lens, c.dv, c.scale); });
  expect_error(p + "kv_cache': expected a block_size",
               [&] { call(c.q, c.cache.narrow(1, 0, 8).contiguous(), c.table, c.lens, c.dv, c.scale); });
  expect_error(p + "kv_cache': expected a contiguous", [&] {
    call(c.q, c.cache.transpose(0, 1).contiguous().transpose(0, 1), c.table, c.lens, c.dv, c.scale);
  });
  expect_error(p + "block_table': expected dtype Int",
               [&] { call(c.q, c.cache, c.table.to(torch::kLong), c.lens, c.dv, c.scale); });
  expect_error(p + "block_table': expected 2 rows",
               [&] { call(c.q, c.cache, c.table.narrow(0, 0, 1), c.lens, c.dv, c.scale); });
  expect_error(p + "block_table': entry [1, 0]", [&] {
    auto t = c.table.clone();
    t[1][0] = -1;
    call(c.q, c.cache, t, c.lens, c.dv, c.scale);
  });
  expect_error(p + "seq_lens': expected dtype Int",
               [&] { call(c.q, c.cache, c.table, c.lens.to(torch::kLong), c.dv, c.scale); });
  expect_error(p + "seq_lens': expected 2 entries",
               [&] { call(c.q, c.cache, c.table, c.lens.narrow(0, 0, 1), c.dv, c.scale); });
  expect_error(p + "seq_lens': entry 1 is 99", [&] {
    auto l = c.lens.clone();
    l[1] = 99;
    call(c.q, c.cache, c.table, l, c.dv, c.scale);
  });
  expect_error(p + "head_dim_v': expected 1 <= head_dim_v <= D_qk",
               [&] { call(c.q, c.cache, c.table, c.lens, 25, c.scale); });
  expect_error(p + "softmax_scale': expected a finite softmax_scale > 0",
               [&] { call(c.q, c.cache, c.table, c.lens, c.dv, 0.0); });
}

}  // namespace
