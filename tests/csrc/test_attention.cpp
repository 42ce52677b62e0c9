// The attention family (csrc/nn/attention): config keys, KV-cache size against the formula of
// every kind, GQA/MQA semantics, cached decoding against the full forward, and autograd.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "csrc/nn/attention/attention.h"
#include "csrc/nn/generate.h"
#include "csrc/nn/transformer.h"
#include "tests/csrc/test_attention_util.h"

namespace {

using ts::config::Config;
using ts::nn::MlaDecodePath;
using ts::test::rel_max_diff;
using ts::test::tiny_attention_config;

TEST(Attention, ConfigKeysParseAndValidate) {
  auto c = ts::config::parse_config(
      "model:\n  attention:\n    kind: mla\n    kv_lora_rank: 48\n    q_lora_rank: 24\n    qk_nope_head_dim: 12\n"
      "    qk_rope_head_dim: 6\n    v_head_dim: 10\n    softmax_scale: 0.25\n");
  const auto& a = c.model.attention;
  EXPECT_EQ(a.kind, "mla");
  EXPECT_EQ(a.kv_lora_rank, 48);
  EXPECT_EQ(a.q_lora_rank, 24);
  EXPECT_EQ(a.qk_nope_head_dim, 12);
  EXPECT_EQ(a.qk_rope_head_dim, 6);
  EXPECT_EQ(a.v_head_dim, 10);
  EXPECT_DOUBLE_EQ(a.softmax_scale, 0.25);
  EXPECT_THROW(ts::config::parse_config("model:\n  attention:\n    kind: mlaa\n"), ts::config::ConfigError);
  // gqa with a group count that does not divide the heads, and an odd rope width.
  auto bad = tiny_attention_config("gqa");
  bad.model.attention.n_kv_heads = 3;
  try {
    ts::nn::Transformer m(bad);
    FAIL() << "no error";
  } catch (const ts::config::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.attention.n_kv_heads"), std::string::npos) << e.what();
  }
  auto odd = tiny_attention_config("mla");
  odd.model.attention.qk_rope_head_dim = 5;
  EXPECT_THROW(ts::nn::Transformer m(odd), ts::config::ConfigError);
}

// Values per token and layer, by the formula of each kind (n_h heads of d_h, n_g KV groups,
// latent d_c and rope key d_R).
int64_t formula(const Config& c) {
  const auto& a = c.model.attention;
  const int64_t n_h = c.model.n_heads, d_h = c.model.d_model / n_h;
  if (a.kind == "mha") return 2 * n_h * d_h;
  if (a.kind == "gqa") return 2 * a.n_kv_heads * d_h;
  if (a.kind == "mqa") return 2 * d_h;
  return a.kv_lora_rank + a.qk_rope_head_dim;
}

TEST(Attention, MeasuredCacheBytesEqualTheFormula) {
  for (const char* kind : {"mha", "gqa", "mqa", "mla"}) {
    SCOPED_TRACE(kind);
    auto cfg = tiny_attention_config(kind);
    ts::nn::Transformer model(cfg);
    const int64_t l = cfg.model.n_layers;
    EXPECT_EQ(model->kv_cache_values_per_token(), formula(cfg) * l);
    ts::nn::Decoder dec(model, /*batch=*/3, /*max_tokens=*/40, /*block_size=*/16);
    const int64_t slots = 3 * 3 * 16;  // 3 sequences x ceil(40/16) blocks x 16 rows
    EXPECT_EQ(dec.cache().bytes(), formula(cfg) * l * slots * static_cast<int64_t>(sizeof(float)));
    EXPECT_EQ(dec.cache().bytes_per_token(), formula(cfg) * l * static_cast<int64_t>(sizeof(float)));
  }
  // DeepSeek-V3's dims, one layer, bf16 pools: MHA 2 * 128 * 128 values, MLA 512 + 64.
  const auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16);
  ts::nn::KVCache mha(1, {{128, 128}, {128, 128}}, 1, 64, 64, bf16);
  ts::nn::KVCache mla(1, {{1, 512 + 64}}, 1, 64, 64, bf16);
  EXPECT_EQ(mha.bytes_per_token(), 2 * 128 * 128 * 2);
  EXPECT_EQ(mla.bytes_per_token(), (512 + 64) * 2);
}

TEST(Attention, GroupedKvHeadsAreSharedByConsecutiveQueryHeads) {
  torch::manual_seed(1);
  const int64_t D = 32, H = 4, dh = 8, T = 9;
  ts::config::PrecisionConfig prec;
  auto rope = ts::nn::Rope::make(dh, T, 10000.0, torch::kCPU);
  auto x = torch::randn({2, T, D});
  for (int64_t G : {2, 1}) {  // gqa, mqa
    SCOPED_TRACE(G);
    ts::nn::GroupedQueryAttentionImpl grouped(D, H, G, prec), full(D, H, H, prec);
    torch::NoGradGuard ng;
    full.wq->weight.copy_(grouped.wq->weight);
    full.wo->weight.copy_(grouped.wo->weight);
    // Query head h uses KV group h / (H / G): MHA with that group's K/V rows repeated.
    auto group_of = torch::arange(H, torch::kInt64).div(H / G, "floor");
    full.wk->weight.copy_(grouped.wk->weight.view({G, dh, D}).index_select(0, group_of).reshape({H * dh, D}));
    full.wv->weight.copy_(grouped.wv->weight.view({G, dh, D}).index_select(0, group_of).reshape({H * dh, D}));
    EXPECT_LT(rel_max_diff(grouped.forward(x, rope), full.forward(x, rope)), 1e-5);
  }
}

// Prefills three sequences with ragged prompts in one step, then one 3-token step, then one
// token at a time; every logit row must equal the full forward of that sequence alone.
void check_decode_matches_forward(const Config& cfg, MlaDecodePath path) {
  torch::manual_seed(5);
  ts::nn::Transformer model(cfg);
  model->eval();
  ts::nn::set_mla_decode_path(model, path);
  const std::vector<int64_t> lens = {37, 18, 26}, prompt = {20, 5, 17};
  const int64_t B = 3, T = 37;
  auto tokens = torch::randint(0, cfg.model.vocab_size, {B, T});
  ts::nn::Decoder dec(model, B, T, /*block_size=*/16, /*shuffle_blocks=*/true);
  std::vector<std::vector<torch::Tensor>> got(B);
  std::vector<int64_t> pos(B, 0);
  auto run_step = [&](int64_t S, std::vector<int64_t> n_new) {
    auto step_tokens = torch::zeros({B, S}, torch::kInt64);
    for (int64_t b = 0; b < B; ++b)
      if (n_new[b]) step_tokens[b].narrow(0, 0, n_new[b]).copy_(tokens[b].narrow(0, pos[b], n_new[b]));
    auto logits = dec.step(step_tokens, n_new).logits;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < n_new[b]; ++s) got[b].push_back(logits[b][s]);
    for (int64_t b = 0; b < B; ++b) pos[b] += n_new[b];
  };
  run_step(20, prompt);
  run_step(3, {3, 1, 2});
  for (bool more = true; more;) {
    std::vector<int64_t> n(B);
    more = false;
    for (int64_t b = 0; b < B; ++b) more |= (n[b] = pos[b] < lens[b] ? 1 : 0) != 0;
    if (more) run_step(1, n);
  }
  EXPECT_EQ(dec.cache().lengths(), lens);
  torch::NoGradGuard ng;
  for (int64_t b = 0; b < B; ++b) {
    auto ref = model->forward(tokens[b].narrow(0, 0, lens[b]).unsqueeze(0))[0];
    // fp32 throughout; the paths differ in summation order only.
    EXPECT_LT(rel_max_diff(torch::stack(got[b]), ref), 2e-5) << "sequence " << b;
  }
}

TEST(Attention, CachedDecodeMatchesFullForwardMha) { check_decode_matches_forward(tiny_attention_config("mha"), {}); }
TEST(Attention, CachedDecodeMatchesFullForwardGqa) { check_decode_matches_forward(tiny_attention_config("gqa"), {}); }
TEST(Attention, CachedDecodeMatchesFullForwardMqa) { check_decode_matches_forward(tiny_attention_config("mqa"), {}); }
TEST(Attention, CachedDecodeMatchesFullForwardMlaAbsorbed) {
  check_decode_matches_forward(tiny_attention_config("mla", 12), MlaDecodePath::kAbsorbed);
}
TEST(Attention, CachedDecodeMatchesFullForwardMlaNaive) {
  check_decode_matches_forward(tiny_attention_config("mla"), MlaDecodePath::kNaive);
}

TEST(Attention, EveryKindTrainsWithAutograd) {
  for (const char* kind : {"mha", "gqa", "mqa", "mla"}) {
    SCOPED_TRACE(kind);
    torch::manual_seed(2);
    auto cfg = tiny_attention_config(kind, 12);
    ts::nn::Transformer model(cfg);
    auto tokens = torch::randint(0, 64, {2, 17});
    auto loss = ts::nn::TransformerImpl::loss(model->forward(tokens.narrow(1, 0, 16)), tokens.narrow(1, 1, 16));
    loss.backward();
    for (const auto& p : model->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
    }
  }
}

}  // namespace
