// Multi-token prediction (csrc/nn/mtp.h) and speculative decoding with it (csrc/nn/generate.h):
// the MTP losses against a composition of the model's own pieces, gradients into the shared
// embedding and head, depth 0 unchanged, speculative greedy decoding token-identical to plain
// greedy decoding (every attention kind, dense and MoE, ragged batch) with the drafts of a
// recomputing reference, speculative sampling distributed as plain sampling, and KV-cache
// rollback.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "csrc/nn/generate.h"
#include "csrc/nn/transformer.h"
#include "tests/csrc/test_attention_util.h"

namespace {

using ts::nn::GenerateOptions;
using ts::nn::GenerateRequest;
using ts::nn::TransformerImpl;

ts::config::Config mtp_config(const std::string& kind, bool moe, int64_t depth) {
  auto c = ts::test::tiny_attention_config(kind, kind == "mla" ? 12 : 0);
  c.model.mtp.depth = depth;
  if (moe) {
    c.model.ffn = "moe";
    c.model.moe.n_routed_experts = 4;
    c.model.moe.top_k = 2;
    c.model.moe.expert_hidden = 16;
    c.model.moe.first_k_dense = 1;
    c.model.moe.score_func = "sigmoid";
    c.model.moe.loss_free = true;
  }
  return c;
}

torch::Tensor ce(const torch::Tensor& logits, const torch::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.flatten(0, 1).to(torch::kDouble), targets.flatten());
}

// The losses composed here from the model's pieces, in float64 where the loss is formed: depth k
// sees the previous depth's hidden states at positions 0..T-k-1 and the embeddings of tokens
// k..T-1, runs its block, and predicts targets k..T-1 with the main head.
TEST(Mtp, LossesMatchACompositionOfThePieces) {
  for (int64_t D : {1, 2, 3}) {
    SCOPED_TRACE(D);
    auto cfg = mtp_config("mha", false, D);
    torch::manual_seed(1);
    ts::nn::Transformer model(cfg);
    auto x = torch::randint(0, cfg.model.vocab_size, {3, 17}, torch::kInt64);
    auto y = torch::randint(0, cfg.model.vocab_size, {3, 17}, torch::kInt64);
    const auto out = model->forward_outputs(x);
    const auto l = TransformerImpl::lm_loss(out, y);
    ASSERT_EQ(static_cast<int64_t>(l.depth.size()), D);

    const int64_t T = x.size(1);
    auto h = model->run_blocks(model->embed->forward(x), 0, model->n_layers());
    // The model's loss is reduced in fp32 (its last bits depend on the CPU's vector path), the
    // reference in float64 over the same logits: equal within fp32 rounding.
    const double main_ref = ce(model->head->forward(model->norm->forward(h)), y).item<double>();
    EXPECT_NEAR(l.main.item<double>(), main_ref, 2e-6 * main_ref);
    const auto rope = ts::nn::Rope::make(model->blocks[0]->attn->rope_dim(), T, cfg.model.rope_theta, torch::kCPU);
    auto prev = h;
    double sum = 0;
    for (int64_t k = 1; k <= D; ++k) {
      auto& m = model->mtp[k - 1];
      auto joined =
          torch::cat({m->hnorm(prev.narrow(1, 0, T - k)), m->enorm(model->embed->forward(x.narrow(1, k, T - k)))}, -1);
      prev = m->block->forward(m->eh_proj(joined), rope);
      const double want = ce(model->head->forward(m->norm(prev)), y.narrow(1, k, T - k)).item<double>();
      EXPECT_NEAR(l.depth[k - 1].item<double>(), want, 1e-5 * want);
      sum += want;
    }
    // The objective: main + lambda / D * sum.
    EXPECT_NEAR(l.objective(0.3).item<double>(), l.main.item<double>() + 0.3 / D * sum, 1e-5);
  }
}

TEST(Mtp, GradientsReachTheSharedEmbeddingAndHeadFromTheMtpLoss) {
  auto cfg = mtp_config("gqa", false, 2);
  torch::manual_seed(2);
  ts::nn::Transformer model(cfg);
  auto x = torch::randint(0, cfg.model.vocab_size, {2, 12}, torch::kInt64);
  auto y = torch::randint(0, cfg.model.vocab_size, {2, 12}, torch::kInt64);
  const auto l = TransformerImpl::lm_loss(model->forward_outputs(x), y);
  // Only the MTP losses: the embedding gets a gradient through both paths into the modules
  // (h^0 and the embedded tokens), the head through each depth's logits.
  (l.depth[0] + l.depth[1]).backward();
  EXPECT_GT(model->head->weight.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(model->embed->weight.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(model->mtp[1]->eh_proj->weight.grad().abs().sum().item<double>(), 0);
  // ... and the main blocks through h^0, which the first depth reads.
  auto blocks_grad = model->blocks[0]->attn_norm->weight.grad();
  ASSERT_TRUE(blocks_grad.defined());
  EXPECT_GT(blocks_grad.abs().sum().item<double>(), 0);
}

TEST(Mtp, DepthZeroIsTheModelWithoutMtpAndTheMainWeightsDoNotDependOnTheDepth) {
  auto plain = mtp_config("mla", true, 0);
  torch::manual_seed(5);
  ts::nn::Transformer a(plain);
  torch::manual_seed(5);
  ts::nn::Transformer b(mtp_config("mla", true, 2));
  EXPECT_EQ(a->mtp_depth(), 0);
  for (const auto& p : a->named_parameters()) EXPECT_EQ(p.key().rfind("mtp.", 0), std::string::npos) << p.key();
  auto bp = b->named_parameters();
  for (const auto& p : a->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), bp[p.key()])) << p.key();
  EXPECT_GT(b->named_parameters().size(), a->named_parameters().size());
  auto x = torch::randint(0, plain.model.vocab_size, {2, 9}, torch::kInt64);
  a->eval();
  b->eval();
  const auto out = a->forward_outputs(x);
  EXPECT_TRUE(out.mtp_logits.empty());
  EXPECT_TRUE(torch::equal(out.logits, a->forward(x)));
  EXPECT_TRUE(torch::equal(out.logits, b->forward_outputs(x).logits));
}

TEST(Mtp, LossWeightSwitches) {
  auto cfg = mtp_config("mha", false, 1);
  cfg.model.mtp.loss_weight = 0.3;
  cfg.model.mtp.switch_step = 10;
  cfg.model.mtp.switch_loss_weight = 0.1;
  ts::nn::Transformer model(cfg);
  EXPECT_EQ(model->mtp_loss_weight(9), 0.3);
  EXPECT_EQ(model->mtp_loss_weight(10), 0.1);
}

std::vector<GenerateRequest> ragged(int64_t vocab) {
  torch::manual_seed(11);
  std::vector<GenerateRequest> out;
  for (int64_t len : {5, 1, 13, 8}) {
    auto t = torch::randint(0, vocab, {len}, torch::kInt64);
    out.push_back(
        {std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + len), static_cast<uint64_t>(out.size())});
  }
  return out;
}

int64_t top1(const torch::Tensor& row) { return row.argmax().item<int64_t>(); }

// Greedy speculative decoding without caches, one sequence: each step drafts token N+k from the
// training forward over the committed tokens and the earlier drafts (depth k's logits at position
// N-1), then verifies with the main model's forward. Counts the accepted drafts per depth.
std::vector<int64_t> reference_speculative(ts::nn::Transformer& model, std::vector<int64_t> seq, int64_t n_new,
                                           int64_t D, std::vector<int64_t>& accepted) {
  torch::NoGradGuard ng;
  model->eval();
  const size_t prompt = seq.size();
  auto as_batch = [](const std::vector<int64_t>& v) { return torch::tensor(v, torch::kInt64).unsqueeze(0); };
  seq.push_back(top1(model->forward(as_batch(seq))[0][-1]));
  while (static_cast<int64_t>(seq.size() - prompt) < n_new) {
    const int64_t N = static_cast<int64_t>(seq.size()) - 1;
    std::vector<int64_t> ctx = seq, drafts;
    for (int64_t k = 1; k <= D; ++k) {
      const auto out = model->forward_outputs(as_batch(ctx));
      drafts.push_back(top1(out.mtp_logits[k - 1][0][N - 1]));
      ctx.push_back(drafts.back());
    }
    const auto main = model->forward(as_batch(ctx))[0];  // positions N.. verify
    int64_t a = 0;
    while (a < D && top1(main[N + a]) == drafts[a]) ++accepted[a++];
    for (int64_t i = 0; i < a; ++i) seq.push_back(drafts[i]);
    seq.push_back(top1(main[N + a]));
  }
  seq.resize(prompt + static_cast<size_t>(n_new));
  return std::vector<int64_t>(seq.begin() + static_cast<int64_t>(prompt), seq.end());
}

struct SpecCase {
  std::string kind;
  bool moe;
  int64_t depth;
};

void PrintTo(const SpecCase& c, std::ostream* os) { *os << c.kind << (c.moe ? " moe" : " dense") << " D=" << c.depth; }

class SpeculativeGreedy : public ::testing::TestWithParam<SpecCase> {};

TEST_P(SpeculativeGreedy, SameTokensAsPlainGreedyAndTheDraftsOfARecomputingReference) {
  const auto& p = GetParam();
  auto cfg = mtp_config(p.kind, p.moe, p.depth);
  torch::manual_seed(3);
  ts::nn::Transformer model(cfg);
  // Random weights: the drafts are seldom right, but the accepted ones are counted against the
  // reference's, which drafts by recomputing the whole context.
  GenerateOptions o;
  o.max_new_tokens = 14;
  o.sampling.temperature = 0;
  o.block_size = 16;
  const auto requests = ragged(cfg.model.vocab_size);
  const auto plain = ts::nn::generate(model, requests, o);
  o.speculative = true;
  o.keep_logits = true;
  const auto spec = ts::nn::generate(model, requests, o);
  ASSERT_EQ(spec.completions.size(), requests.size());
  // Every step's draft logits equal the training forward's over the committed tokens and the
  // step's earlier drafts (depth k's logits at position N-1): the cached chain, its carries and
  // rollbacks compute what training computes.
  torch::NoGradGuard ng;
  for (size_t b = 0; b < requests.size(); ++b) {
    const auto& c = spec.completions[b];
    ASSERT_EQ(c.draft_logits.size(0), static_cast<int64_t>(c.draft_committed.size()));
    std::vector<int64_t> seq = requests[b].prompt;
    seq.insert(seq.end(), c.tokens.begin(), c.tokens.end());
    for (size_t st = 0; st < c.draft_committed.size(); ++st) {
      const int64_t n = c.draft_committed[st], N = n - 1;  // x_0..x_N committed
      std::vector<int64_t> ctx(seq.begin(), seq.begin() + n);
      for (int64_t k = 1; k <= p.depth; ++k) {
        const auto out = model->forward_outputs(torch::tensor(ctx, torch::kInt64).unsqueeze(0));
        const auto want = out.mtp_logits[k - 1][0][N - 1];
        const auto got = c.draft_logits[static_cast<int64_t>(st)][k - 1];
        ASSERT_LT(ts::test::rel_max_diff(got, want), 1e-4) << "sequence " << b << " step " << st << " depth " << k;
        ctx.push_back(top1(got));
      }
    }
  }
  std::vector<int64_t> accepted(static_cast<size_t>(p.depth), 0);
  for (size_t b = 0; b < requests.size(); ++b) {
    SCOPED_TRACE(b);
    EXPECT_EQ(spec.completions[b].tokens, plain.completions[b].tokens);
    EXPECT_EQ(spec.completions[b].finish_reason, "length");
    EXPECT_EQ(reference_speculative(model, requests[b].prompt, o.max_new_tokens, p.depth, accepted),
              plain.completions[b].tokens);
  }
  // Steps after the last needed token still draft, so compare only when no sequence overshoots:
  // every accepted draft of the reference is one of the generator's.
  int64_t total_ref = 0, total = 0;
  for (int64_t k = 0; k < p.depth; ++k) total_ref += accepted[k], total += spec.stats.drafts_accepted[k];
  EXPECT_EQ(total, total_ref);
  EXPECT_EQ(spec.stats.decode_tokens, plain.stats.decode_tokens);
  EXPECT_GT(spec.stats.verify_steps, 0);
}

INSTANTIATE_TEST_SUITE_P(Kinds, SpeculativeGreedy,
                         ::testing::Values(SpecCase{"mha", false, 1}, SpecCase{"mha", false, 2},
                                           SpecCase{"gqa", true, 2}, SpecCase{"mqa", false, 3},
                                           SpecCase{"mla", false, 2}, SpecCase{"mla", true, 1}),
                         [](const auto& info) {
                           return info.param.kind + (info.param.moe ? "_moe" : "_dense") + "_D" +
                                  std::to_string(info.param.depth);
                         });

// A model whose MTP module drafts well: the trained weights are not needed to test correctness,
// but a drafter that is often right exercises acceptance of several tokens in a row. Depth 1's
// block and projection are zeroed and its norm copies the main model's, so its logits are the
// main model's at the previous position: the draft for N+1 is the main model's prediction for N
// given N-1, right whenever the main model's next-token map has a fixed point.
TEST(Mtp, SpeculativeGreedyWithAFrequentlyRightDrafter) {
  auto cfg = mtp_config("mha", false, 1);
  cfg.model.vocab_size = 8;
  torch::manual_seed(9);
  ts::nn::Transformer model(cfg);
  {
    torch::NoGradGuard ng;
    // A main model that tends to repeat its input: a large identity-like head over the embedding.
    for (auto& blk : model->blocks)
      for (auto& prm : blk->parameters()) prm.mul_(0.01);
    model->head->weight.copy_(model->embed->weight * 8);
    auto& m = model->mtp[0];
    for (auto& prm : m->block->parameters()) prm.mul_(0.01);
    m->eh_proj->weight.zero_();
    m->eh_proj->weight.narrow(1, cfg.model.d_model, cfg.model.d_model).copy_(torch::eye(cfg.model.d_model));
  }
  GenerateOptions o;
  o.max_new_tokens = 20;
  o.sampling.temperature = 0;
  const auto requests = ragged(cfg.model.vocab_size);
  const auto plain = ts::nn::generate(model, requests, o);
  o.speculative = true;
  const auto spec = ts::nn::generate(model, requests, o);
  for (size_t b = 0; b < requests.size(); ++b) EXPECT_EQ(spec.completions[b].tokens, plain.completions[b].tokens);
  EXPECT_GT(spec.stats.acceptance(0), 0.5);
  EXPECT_LT(spec.stats.verify_steps, 15);  // plain decoding takes 19 steps after the prefill
}

// The distribution of the second generated token (the first one a draft can decide) under
// speculative sampling against its exact distribution under plain sampling: sum over the first
// token t of p(t | prompt) p(. | prompt, t), both from the main model's forward. n samples from
// one distribution over V values: E[TV] <= sqrt(V / n) / 2 and TV moves by at most 1/n per
// sample, so P(TV > sqrt(V / n) / 2 + e) <= exp(-2 n e^2) (McDiarmid); e = 0.04 at n = 6000 gives
// about 4e-9. The same bound must reject the drafter's own distribution, or the test could not fail.
TEST(Mtp, SpeculativeSamplingKeepsTheMainModelsDistribution) {
  auto cfg = mtp_config("mha", false, 1);
  cfg.model.vocab_size = 12;
  cfg.model.init_std = 0.5;
  torch::manual_seed(21);
  ts::nn::Transformer model(cfg);
  model->eval();
  torch::NoGradGuard ng;
  const std::vector<int64_t> prompt = {3, 7, 1};
  const int64_t V = cfg.model.vocab_size, n = 6000;
  ts::nn::SamplingOptions so;
  so.temperature = 1.0;
  auto exact = torch::zeros({V}, torch::kDouble), drafted = torch::zeros({V}, torch::kDouble);
  auto p1 = ts::nn::sampling_probs(model->forward(torch::tensor(prompt).unsqueeze(0))[0][-1], so);
  for (int64_t t = 0; t < V; ++t) {
    auto ctx = prompt;
    ctx.push_back(t);
    const auto out = model->forward_outputs(torch::tensor(ctx).unsqueeze(0));
    exact += p1[t] * ts::nn::sampling_probs(out.logits[0][-1], so);
    // The drafter's token for position 4 given t: depth 1 at position 2 (prompt[2], then t).
    drafted += p1[t] * ts::nn::sampling_probs(out.mtp_logits[0][0][2], so);
  }
  std::vector<GenerateRequest> reqs;
  for (int64_t i = 0; i < n; ++i) reqs.push_back({prompt, static_cast<uint64_t>(1000 + i)});
  GenerateOptions o;
  o.max_new_tokens = 2;
  o.sampling = so;
  o.speculative = true;
  const auto res = ts::nn::generate(model, reqs, o);
  auto counts = torch::zeros({V}, torch::kDouble);
  for (const auto& c : res.completions) counts[c.tokens.at(1)] += 1.0;
  const double tv = 0.5 * (counts / n - exact).abs().sum().item<double>();
  const double bound = 0.5 * std::sqrt(static_cast<double>(V) / n) + 0.04;
  EXPECT_LT(tv, bound);
  EXPECT_GT(0.5 * (drafted - exact).abs().sum().item<double>(), 2 * bound);
  EXPECT_GT(res.stats.drafts_accepted[0], 0);
  EXPECT_LT(res.stats.drafts_accepted[0], res.stats.drafts_verified[0]);
}

// Rolling a cache back and writing other tokens leaves it as a plain decode of the tokens kept.
TEST(Mtp, CacheRollbackEqualsAPlainDecodeOfTheKeptTokens) {
  for (const std::string kind : {"gqa", "mla"}) {
    SCOPED_TRACE(kind);
    auto cfg = mtp_config(kind, false, 0);
    torch::manual_seed(4);
    ts::nn::Transformer model(cfg);
    model->eval();
    auto x = torch::randint(0, cfg.model.vocab_size, {2, 6}, torch::kInt64);
    auto spec = torch::randint(0, cfg.model.vocab_size, {2, 3}, torch::kInt64);
    auto other = torch::randint(0, cfg.model.vocab_size, {2, 2}, torch::kInt64);
    ts::nn::Decoder a(model, 2, 32, 16), b(model, 2, 32, 16);
    a.step(x);
    a.step(spec);                   // 3 speculative tokens each
    a.cache().set_lengths({7, 8});  // keep 1 of sequence 0's, 2 of sequence 1's
    auto got = a.step(other).logits;
    // The plain decode: the prompt, the kept tokens, then the other tokens.
    b.step(x);
    b.step(spec.narrow(1, 0, 2), {1, 2});
    auto want = b.step(other).logits;
    EXPECT_LT(ts::test::rel_max_diff(got, want), 1e-5);
    EXPECT_EQ(a.cache().lengths(), b.cache().lengths());
    for (int64_t l = 0; l < model->n_layers(); ++l)
      for (size_t pl = 0; pl < a.cache().planes().size(); ++pl) {
        auto ga = a.cache().gather(l, static_cast<int64_t>(pl), 10),
             gb = b.cache().gather(l, static_cast<int64_t>(pl), 10);
        EXPECT_LT(ts::test::rel_max_diff(ga[0].narrow(0, 0, 9), gb[0].narrow(0, 0, 9)), 1e-6);
        EXPECT_LT(ts::test::rel_max_diff(ga[1], gb[1]), 1e-6);
      }
  }
}

TEST(Mtp, SpeculativeNeedsMtpModules) {
  auto cfg = mtp_config("mha", false, 0);
  ts::nn::Transformer model(cfg);
  GenerateOptions o;
  o.speculative = true;
  EXPECT_THROW(ts::nn::generate(model, ragged(cfg.model.vocab_size), o), std::invalid_argument);
  auto cfg1 = mtp_config("mha", false, 1);
  ts::nn::Transformer m1(cfg1);
  o.draft_tokens = 2;
  EXPECT_THROW(ts::nn::generate(m1, ragged(cfg1.model.vocab_size), o), std::invalid_argument);
}

}  // namespace
