// The cost model (csrc/nn/cost.h): FLOPs against counts done by hand for one small dense and one
// small MoE layer, and parameter counts against the models the same configs build.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "csrc/nn/cost.h"
#include "csrc/nn/transformer.h"
#include "tinyseek_paths.h"

namespace {

// One layer, d_model 16, 2 heads of 8, vocabulary 10, sequences of 8.
ts::config::Config one_layer() {
  ts::config::Config c;
  c.data.seq_len = 8;
  c.model.vocab_size = 10;
  c.model.d_model = 16;
  c.model.n_layers = 1;
  c.model.n_heads = 2;
  c.model.ffn_hidden = 24;
  return c;
}

TEST(Cost, DenseLayerByHand) {
  const auto c = one_layer();
  const auto r = ts::nn::model_cost(c);
  // Parameters: embedding 10*16 + head 16*10 + final norm 16; block: 2 norms of 16, wq/wk/wv/wo
  // 16*16 each, SwiGLU 3 * 16*24.
  EXPECT_EQ(r.total_parameters, 160 + 160 + 16 + 32 + 4 * 256 + 3 * 384);
  EXPECT_EQ(r.active_parameters, r.total_parameters);
  EXPECT_EQ(r.kv_values_per_token, 2 * 16);
  // Per token: head 2*16*10 = 320; four projections 4 * 2*16*16 = 2048; SwiGLU 3 * 2*16*24 = 2304;
  // attention: a causal query of 8 sees 4.5 positions on average, scores and values 2 heads *
  // (2*8 + 2*8) * 4.5 = 288.
  EXPECT_DOUBLE_EQ(r.forward_flops_per_token, 320 + 2048 + 2304 + 288);
  EXPECT_DOUBLE_EQ(r.train_flops_per_token, 3.0 * (320 + 2048 + 2304 + 288));
  EXPECT_DOUBLE_EQ(r.mtp_forward_flops_per_token, 0);
  // Decoding with 5 tokens cached: the new one sees 6.
  EXPECT_DOUBLE_EQ(ts::nn::decode_flops_per_token(c, 5), 320 + 2048 + 2304 + 2 * 32 * 6);
}

TEST(Cost, MoeLayerByHand) {
  auto c = one_layer();
  c.model.ffn = "moe";
  c.model.moe.n_routed_experts = 4;
  c.model.moe.n_shared_experts = 1;
  c.model.moe.top_k = 2;
  c.model.moe.expert_hidden = 8;
  const auto r = ts::nn::model_cost(c);
  // An expert is a SwiGLU of 3 * 16*8 = 384 parameters; 4 routed + 1 shared, router 4*16.
  EXPECT_EQ(r.total_parameters, 160 + 160 + 16 + 32 + 4 * 256 + 64 + 5 * 384);
  EXPECT_EQ(r.active_parameters, r.total_parameters - 2 * 384);  // two routed experts unused
  // Per token: head 320, projections 2048, attention 288, router 2*16*4 = 128, two routed and
  // the shared expert 3 * 2*384 = 2304.
  EXPECT_DOUBLE_EQ(r.forward_flops_per_token, 320 + 2048 + 288 + 128 + 2304);
}

TEST(Cost, MtpByHand) {
  auto c = one_layer();
  c.model.mtp.depth = 1;
  const auto r = ts::nn::model_cost(c);
  // Module 1: hnorm, enorm, norm (3*16), eh_proj 32*16, one dense block as above.
  EXPECT_EQ(r.mtp_parameters, 48 + 512 + 32 + 4 * 256 + 3 * 384);
  // Over 7 of 8 positions: eh_proj 2*32*16 = 1024, the block (projections 2048, SwiGLU 2304,
  // attention over 4 positions on average: 2 * 32 * 4 = 256) and the head 320.
  EXPECT_DOUBLE_EQ(r.mtp_forward_flops_per_token, (1024 + 2048 + 2304 + 256 + 320) * 7.0 / 8.0);
  EXPECT_DOUBLE_EQ(r.train_flops_per_token, 3.0 * (r.forward_flops_per_token + r.mtp_forward_flops_per_token));
}

TEST(Cost, MlaByHand) {
  auto c = one_layer();
  auto& a = c.model.attention;
  a.kind = "mla";
  a.kv_lora_rank = 12;
  a.q_lora_rank = 10;
  a.qk_nope_head_dim = 8;
  a.qk_rope_head_dim = 4;
  a.v_head_dim = 6;
  const auto r = ts::nn::model_cost(c);
  // wq_a 16*10, q_norm 10, wq_b 10*2*12, wkv_a 16*16, kv_norm 12, wkv_b 12*2*14, wo 12*16.
  EXPECT_EQ(r.total_parameters, 160 + 160 + 16 + 32 + 160 + 10 + 240 + 256 + 12 + 336 + 192 + 3 * 384);
  EXPECT_EQ(r.kv_values_per_token, 12 + 4);
  // Training (decompressed): the projections 2*(160 + 240 + 256 + 336 + 192), attention 2 heads *
  // (2*12 + 2*6) * 4.5 positions.
  EXPECT_DOUBLE_EQ(r.forward_flops_per_token, 320 + 2 * (160 + 240 + 256 + 336 + 192) + 2 * 36 * 4.5 + 2304);
  // Decoding (absorbed) with 5 cached: no wkv_b; q_nope into latent 2*2*8*12, MQA over 6 rows with
  // key 16 and value 12 wide, per head: 2*(16 + 12) * 6; back to d_v: 2*2*12*6.
  EXPECT_DOUBLE_EQ(ts::nn::decode_flops_per_token(c, 5),
                   320 + 2 * (160 + 240 + 256 + 192) + 2 * 2 * 8 * 12 + 2 * 2 * 28 * 6 + 2 * 2 * 12 * 6 + 2304);
}

// The parameter counts equal those of the models built from the same configs.
TEST(Cost, ParametersMatchTheBuiltModel) {
  auto base = one_layer();
  base.model.n_layers = 3;
  std::vector<ts::config::Config> configs;
  for (const char* kind : {"mha", "gqa", "mqa", "mla"}) {
    auto c = base;
    c.model.attention.kind = kind;
    c.model.attention.n_kv_heads = 1;
    c.model.attention.kv_lora_rank = 12;
    c.model.attention.qk_nope_head_dim = 8;
    c.model.attention.qk_rope_head_dim = 4;
    c.model.attention.v_head_dim = 6;
    configs.push_back(c);
    c.model.attention.q_lora_rank = 10;
    configs.push_back(c);
  }
  auto moe = configs.back();  // MLA with a low-rank query, MoE from layer 1, two MTP modules
  moe.model.ffn = "moe";
  moe.model.moe.first_k_dense = 1;
  moe.model.moe.n_routed_experts = 8;
  moe.model.moe.top_k = 2;
  moe.model.moe.n_group = 4;
  moe.model.moe.topk_group = 2;
  moe.model.moe.score_func = "sigmoid";
  moe.model.moe.loss_free = true;
  moe.model.mtp.depth = 2;
  configs.push_back(moe);
  for (const auto& c : configs) {
    SCOPED_TRACE(c.model.attention.kind + " q_lora " + std::to_string(c.model.attention.q_lora_rank) + " " +
                 c.model.ffn);
    ts::nn::Transformer m(c);
    const auto r = ts::nn::model_cost(c);
    EXPECT_EQ(r.total_parameters + r.mtp_parameters, m->num_parameters());
    EXPECT_EQ(r.kv_values_per_token, m->kv_cache_values_per_token());
    int64_t mtp = 0;
    for (const auto& p : m->named_parameters())
      if (p.key().starts_with("mtp.")) mtp += p.value().numel();
    EXPECT_EQ(r.mtp_parameters, mtp);
  }
}

// The shipped cost study configs keep their promise: the dense baselines' parameter counts equal
// tiny-V3's active and total counts within 1%.
TEST(Cost, ShippedBaselinesMatchTinyV3) {
  for (const char* file : {"/configs/tiny_v3.yaml", "/configs/cost_study.yaml"}) {
    SCOPED_TRACE(file);
    const auto ex = ts::config::load_experiment(std::string(TINYSEEK_SOURCE_DIR) + file, {});
    const ts::config::Config* v3 = nullptr;
    for (const auto& v : ex.variants)
      if (v.name == "tiny_v3") v3 = &v.config;
    ASSERT_NE(v3, nullptr);
    const auto subject = ts::nn::model_cost(*v3);
    int matched = 0;
    for (const auto& v : ex.variants) {
      const int64_t target = v.name == "dense_same_active"  ? subject.active_parameters
                             : v.name == "dense_same_total" ? subject.total_parameters
                                                            : -1;
      if (target < 0) continue;
      ++matched;
      const auto c = ts::nn::model_cost(v.config);
      EXPECT_NEAR(static_cast<double>(c.total_parameters) / static_cast<double>(target), 1.0, 0.01) << v.name;
      EXPECT_EQ(c.active_parameters, c.total_parameters);
    }
    EXPECT_GE(matched, 1);
  }
}

}  // namespace
