// Generation (csrc/nn/generate.h): KV-cached generation against recomputing the whole context for
// every attention kind and both FFNs in a ragged batch; sampling distributions checked exactly on
// a small vocabulary and by frequency; sequences independent of their batch; stop tokens and
// sequences; bad requests.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "csrc/nn/generate.h"
#include "csrc/nn/transformer.h"
#include "tests/csrc/test_attention_util.h"

namespace {

using ts::nn::GenerateOptions;
using ts::nn::GenerateRequest;
using ts::nn::MlaDecodePath;
using ts::nn::SamplingOptions;
using ts::test::rel_max_diff;
using ts::test::tiny_attention_config;

ts::config::Config generation_config(const std::string& kind, bool moe) {
  auto c = tiny_attention_config(kind, kind == "mla" ? 12 : 0);
  if (moe) {
    c.model.ffn = "moe";
    c.model.moe.n_routed_experts = 4;
    c.model.moe.top_k = 2;
    c.model.moe.expert_hidden = 16;
    c.model.moe.first_k_dense = 1;  // a dense block and an MoE block
    c.model.moe.score_func = "sigmoid";
    c.model.moe.loss_free = true;
  }
  return c;
}

std::vector<GenerateRequest> ragged_requests(int64_t vocab) {
  torch::manual_seed(11);
  std::vector<GenerateRequest> out;
  for (int64_t len : {5, 13, 8}) {
    auto t = torch::randint(0, vocab, {len}, torch::kInt64);
    out.push_back(
        {std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + len), static_cast<uint64_t>(out.size())});
  }
  return out;
}

struct CacheCase {
  std::string kind;
  bool moe;
  MlaDecodePath path;
};

class GenerateMatchesRecompute : public ::testing::TestWithParam<CacheCase> {};

// Greedy generation through the cache gives the tokens of recomputing the whole context for each
// new token, and every logit row it drew from equals the full forward's (fp32; the paths differ in
// summation order only).
TEST_P(GenerateMatchesRecompute, TokensAndLogits) {
  const auto& p = GetParam();
  auto cfg = generation_config(p.kind, p.moe);
  torch::manual_seed(3);
  ts::nn::Transformer model(cfg);
  ts::nn::set_mla_decode_path(model, p.path);
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.sampling.temperature = 0;
  o.block_size = 16;
  o.keep_logits = true;
  const auto requests = ragged_requests(cfg.model.vocab_size);
  const auto res = ts::nn::generate(model, requests, o);
  ASSERT_EQ(res.completions.size(), 3u);
  for (size_t b = 0; b < requests.size(); ++b) {
    SCOPED_TRACE(b);
    const auto& c = res.completions[b];
    EXPECT_EQ(c.finish_reason, "length");
    torch::Tensor ref_logits;
    const auto ref = ts::nn::greedy_recompute(model, requests[b].prompt, o.max_new_tokens, &ref_logits);
    EXPECT_EQ(c.tokens, ref);
    ASSERT_EQ(c.logits.sizes(), ref_logits.sizes());
    EXPECT_LT(rel_max_diff(c.logits, ref_logits), 2e-5);
  }
  EXPECT_EQ(res.stats.batch, 3);
  EXPECT_EQ(res.stats.prompt_tokens, 5 + 13 + 8);
  EXPECT_EQ(res.stats.decode_tokens, 3 * (o.max_new_tokens - 1));
  EXPECT_GT(res.stats.kv_cache_bytes, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, GenerateMatchesRecompute,
    ::testing::Values(
        CacheCase{"mha", false, MlaDecodePath::kAbsorbed}, CacheCase{"gqa", false, MlaDecodePath::kAbsorbed},
        CacheCase{"mqa", false, MlaDecodePath::kAbsorbed}, CacheCase{"mla", false, MlaDecodePath::kAbsorbed},
        CacheCase{"mla", false, MlaDecodePath::kNaive}, CacheCase{"mha", true, MlaDecodePath::kAbsorbed},
        CacheCase{"gqa", true, MlaDecodePath::kAbsorbed}, CacheCase{"mqa", true, MlaDecodePath::kAbsorbed},
        CacheCase{"mla", true, MlaDecodePath::kAbsorbed}, CacheCase{"mla", true, MlaDecodePath::kNaive}),
    [](const auto& info) {
      return info.param.kind + (info.param.moe ? "_moe" : "_dense") +
             (info.param.kind == "mla" ? (info.param.path == MlaDecodePath::kNaive ? "_naive" : "_absorbed") : "");
    });

// Sampled text depends on a sequence's prompt and seed only: alone or in a batch with others
// (of other lengths), the same tokens.
TEST(Generate, SameSeedSameTextWhateverTheBatch) {
  for (bool moe : {false, true}) {
    SCOPED_TRACE(moe);
    auto cfg = generation_config("mla", moe);
    torch::manual_seed(4);
    ts::nn::Transformer model(cfg);
    GenerateOptions o;
    o.max_new_tokens = 20;
    o.sampling = {1.0, 0, 0.95};
    const auto requests = ragged_requests(cfg.model.vocab_size);
    const auto together = ts::nn::generate(model, requests, o);
    for (size_t b = 0; b < requests.size(); ++b) {
      const auto alone = ts::nn::generate(model, {requests[b]}, o);
      EXPECT_EQ(alone.completions[0].tokens, together.completions[b].tokens) << b;
    }
    // Another seed gives another text (20 tokens over 64 choices).
    auto reseeded = requests;
    reseeded[1].seed = 99;
    EXPECT_NE(ts::nn::generate(model, reseeded, o).completions[1].tokens, together.completions[1].tokens);
  }
}

torch::Tensor logits_of(const std::vector<double>& probs) { return torch::tensor(probs, torch::kDouble).log(); }

void expect_probs(const torch::Tensor& got, const std::vector<double>& want) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i].item<double>(), want[i], 1e-12) << "token " << i;
}

// A five-token vocabulary with probabilities 0.4, 0.3, 0.15, 0.1, 0.05 (tokens in another order, so
// that sorting matters): each filter keeps exactly the tokens its definition names.
TEST(Sampling, FiltersKeepExactlyTheTokensTheyShould) {
  // token:                  0     1     2     3     4
  const auto l = logits_of({0.10, 0.40, 0.05, 0.30, 0.15});
  expect_probs(ts::nn::sampling_probs(l, {1.0, 0, 1.0}), {0.10, 0.40, 0.05, 0.30, 0.15});
  expect_probs(ts::nn::sampling_probs(l, {0.0, 0, 1.0}), {0, 1, 0, 0, 0});  // greedy
  expect_probs(ts::nn::sampling_probs(l, {1.0, 2, 1.0}), {0, 0.4 / 0.7, 0, 0.3 / 0.7, 0});
  expect_probs(ts::nn::sampling_probs(l, {1.0, 5, 1.0}), {0.10, 0.40, 0.05, 0.30, 0.15});  // k = V: all
  // top-p: keep while the mass before a token (in decreasing order) is below p.
  expect_probs(ts::nn::sampling_probs(l, {1.0, 0, 0.35}), {0, 1, 0, 0, 0});                 // 0 < .35, .4 >= .35
  expect_probs(ts::nn::sampling_probs(l, {1.0, 0, 0.6}), {0, 0.4 / 0.7, 0, 0.3 / 0.7, 0});  // .4 < .6, .7 >= .6
  expect_probs(ts::nn::sampling_probs(l, {1.0, 0, 0.75}), {0, 0.4 / 0.85, 0, 0.3 / 0.85, 0.15 / 0.85});
  // top-k first, then top-p over the renormalized top-k: .4/.85 = .47 < .5, then .4+.3 / .85 = .82
  expect_probs(ts::nn::sampling_probs(l, {1.0, 3, 0.5}), {0, 0.4 / 0.7, 0, 0.3 / 0.7, 0});
  // Temperature 2: proportional to sqrt(p).
  std::vector<double> s = {std::sqrt(0.10), std::sqrt(0.40), std::sqrt(0.05), std::sqrt(0.30), std::sqrt(0.15)};
  double z = 0;
  for (double v : s) z += v;
  for (double& v : s) v /= z;
  expect_probs(ts::nn::sampling_probs(l, {2.0, 0, 1.0}), s);
  // Ties at the k-th logit are kept.
  expect_probs(ts::nn::sampling_probs(torch::tensor({1.0, 2.0, 2.0, 0.5}), {1.0, 1, 1.0}), {0, 0.5, 0.5, 0});
}

// Drawn frequencies follow the filtered distribution (fixed seed: the counts are deterministic),
// and filtered tokens never appear.
TEST(Sampling, FrequenciesMatchTheDistribution) {
  const auto l = logits_of({0.10, 0.40, 0.05, 0.30, 0.15});
  const auto probs = ts::nn::sampling_probs(l, {1.0, 3, 1.0});  // tokens 1, 3, 4: .4/.85, .3/.85, .15/.85
  ts::nn::TokenSampler sampler(1234);
  const int n = 40000;
  std::map<int64_t, int> counts;
  for (int i = 0; i < n; ++i) ++counts[sampler.draw(probs)];
  EXPECT_EQ(counts.count(0) + counts.count(2), 0u);
  for (int64_t t : {1, 3, 4}) {
    const double p = probs[t].item<double>(), sd = std::sqrt(n * p * (1 - p));
    EXPECT_NEAR(counts[t], n * p, 4 * sd) << "token " << t;
  }
  // The same seed draws the same stream.
  ts::nn::TokenSampler a(7), b(7);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.draw(probs), b.draw(probs));
}

TEST(Generate, StopTokensAndStopSequences) {
  auto cfg = generation_config("gqa", false);
  torch::manual_seed(8);
  ts::nn::Transformer model(cfg);
  GenerateOptions o;
  o.max_new_tokens = 16;
  o.sampling.temperature = 0;
  const auto requests = ragged_requests(cfg.model.vocab_size);
  const auto free_run = ts::nn::generate(model, requests, o).completions;
  // Stop sequence: the tokens at [3, 6) of sequence 1's free run end it right there; the other
  // sequences (which do not generate it) run to max_new_tokens or stop where they produce it.
  const auto& t1 = free_run[1].tokens;
  GenerateOptions s = o;
  s.stop_sequences = {{t1[3], t1[4], t1[5]}};
  auto stopped = ts::nn::generate(model, requests, s).completions;
  EXPECT_EQ(stopped[1].tokens, std::vector<int64_t>(t1.begin(), t1.begin() + 6));
  EXPECT_EQ(stopped[1].finish_reason, "stop");
  for (size_t b : {0u, 2u}) {
    const auto& f = free_run[b].tokens;
    ASSERT_LE(stopped[b].tokens.size(), f.size());
    EXPECT_TRUE(std::equal(stopped[b].tokens.begin(), stopped[b].tokens.end(), f.begin())) << b;
  }
  // Stop token: sequence 0 ends after its first occurrence of its own 4th token.
  GenerateOptions k = o;
  const int64_t tok = free_run[0].tokens[3];
  k.stop_tokens = {tok};
  const auto first = std::find(free_run[0].tokens.begin(), free_run[0].tokens.end(), tok) - free_run[0].tokens.begin();
  auto by_token = ts::nn::generate(model, requests, k).completions;
  EXPECT_EQ(by_token[0].tokens.size(), static_cast<size_t>(first + 1));
  EXPECT_EQ(by_token[0].tokens.back(), tok);
  EXPECT_EQ(by_token[0].finish_reason, "stop");
}

TEST(Generate, BadRequestsAreRefused) {
  auto cfg = generation_config("mha", false);
  ts::nn::Transformer model(cfg);
  GenerateOptions o;
  o.max_new_tokens = 4;
  EXPECT_THROW(ts::nn::generate(model, {}, o), std::invalid_argument);
  EXPECT_THROW(ts::nn::generate(model, {{{}, 0}}, o), std::invalid_argument);
  EXPECT_THROW(ts::nn::generate(model, {{{1, 64}, 0}}, o), std::invalid_argument);  // vocab is 64
  o.max_new_tokens = 0;
  EXPECT_THROW(ts::nn::generate(model, {{{1}, 0}}, o), std::invalid_argument);
}

TEST(Generate, BytesRoundTrip) {
  const std::string s = "caf\xC3\xA9 <answer>";
  EXPECT_EQ(ts::nn::tokens_to_bytes(ts::nn::bytes_to_tokens(s)), s);
  EXPECT_EQ(ts::nn::tokens_to_bytes({65, 300, 66}),
            "A\xEF\xBF\xBD"
            "B");
}

}  // namespace
