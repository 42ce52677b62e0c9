// The DeepSeekMoE layer (csrc/nn/moe.h) and router (csrc/nn/moe_router.h): routing against a brute
// force reference (group-limited top-K, gate weights, bias only in the choice), the layer against a
// dense per-expert reference (forward and gradients), balance losses against their formulas, the
// loss-free bias update, capacity dropping, and the transformer / trainer wiring.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "csrc/config/config.h"
#include "csrc/nn/model_config.h"
#include "csrc/nn/moe.h"
#include "csrc/nn/moe_router.h"
#include "csrc/nn/transformer.h"
#include "csrc/train/trainer.h"
#include "csrc/util/fs.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

ts::config::Config moe_config(const std::string& moe_yaml) {
  return ts::config::parse_config(R"(
name: moe_test
data: {seq_len: 16, synthetic_bytes: 60000}
model:
  d_model: 32
  n_layers: 2
  n_heads: 2
  ffn_hidden: 64
  ffn: moe
  moe: {)" + moe_yaml + R"(}
train: {steps: 6, batch_size: 4, warmup_steps: 1, eval_every: 3, eval_batches: 2, checkpoint_every: 2, log_every: 100}
)");
}

// Brute force: per token, the eligible groups then the top-K experts by biased score.
std::set<int64_t> brute_force_choice(const torch::Tensor& biased_row, const ts::config::MoeConfig& c) {
  const int64_t E = c.n_routed_experts, G = c.n_group, per = E / G;
  std::vector<float> s(biased_row.data_ptr<float>(), biased_row.data_ptr<float>() + E);
  std::vector<std::pair<float, int64_t>> groups;
  for (int64_t g = 0; g < G; ++g) {
    std::vector<float> v(s.begin() + g * per, s.begin() + (g + 1) * per);
    std::sort(v.rbegin(), v.rend());
    groups.push_back({per >= 2 ? v[0] + v[1] : v[0], g});
  }
  std::sort(groups.rbegin(), groups.rend());
  std::vector<std::pair<float, int64_t>> eligible;
  for (int64_t i = 0; i < (G > 1 ? c.topk_group : G); ++i)
    for (int64_t e = groups[i].second * per; e < (groups[i].second + 1) * per; ++e) eligible.push_back({s[e], e});
  std::sort(eligible.rbegin(), eligible.rend());
  std::set<int64_t> out;
  for (int64_t k = 0; k < c.top_k; ++k) out.insert(eligible[k].second);
  return out;
}

TEST(MoeRouter, GroupLimitedTopKMatchesBruteForce) {
  for (const char* score : {"softmax", "sigmoid"}) {
    ts::config::MoeConfig c;
    c.n_routed_experts = 16, c.top_k = 3, c.n_group = 4, c.topk_group = 2, c.score_func = score;
    c.routed_scaling_factor = 2.5;
    torch::manual_seed(3);
    auto logits = torch::randn({40, 16});
    auto bias = torch::randn({16}) * 0.1;
    auto r = ts::nn::route(logits, bias, c);
    auto biased = (r.scores + bias).contiguous();
    for (int64_t t = 0; t < 40; ++t) {
      auto ids = r.topk_ids[t].contiguous();
      std::set<int64_t> got(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + 3);
      EXPECT_EQ(got, brute_force_choice(biased[t].contiguous(), c)) << score << " token " << t;
    }
    // Gate weights come from the unbiased scores of the chosen experts.
    auto chosen = r.scores.gather(1, r.topk_ids);
    auto expect = std::string(score) == "sigmoid" ? chosen / chosen.sum(-1, true) * 2.5 : chosen * 2.5;
    EXPECT_TRUE(torch::allclose(r.topk_weights, expect, 1e-6, 1e-7)) << score;
  }
}

TEST(MoeRouter, BiasChangesTheChoiceNotTheWeights) {
  ts::config::MoeConfig c;
  c.n_routed_experts = 8, c.top_k = 2, c.score_func = "sigmoid";
  torch::manual_seed(4);
  auto logits = torch::randn({32, 8});
  auto bias = torch::zeros({8});
  bias[5] = 10.0;  // every token now picks expert 5
  auto r = ts::nn::route(logits, bias, c);
  EXPECT_TRUE((r.topk_ids == 5).any(1).all().item<bool>());
  auto chosen = torch::sigmoid(logits).gather(1, r.topk_ids);
  EXPECT_TRUE(torch::allclose(r.topk_weights, chosen / chosen.sum(-1, true)));
  // softmax without renormalization (V2): the weights are the plain probabilities.
  c.score_func = "softmax";
  auto r2 = ts::nn::route(logits, torch::Tensor(), c);
  EXPECT_TRUE(torch::allclose(r2.topk_weights, torch::softmax(logits, -1).gather(1, r2.topk_ids)));
}

TEST(MoeRouter, BalanceLossesMatchTheirFormulas) {
  ts::config::MoeConfig c;
  c.n_routed_experts = 4, c.top_k = 2, c.score_func = "sigmoid";
  torch::manual_seed(5);
  const int64_t B = 3, S = 5, T = B * S, E = 4, K = 2;
  auto r = ts::nn::route(torch::randn({T, E}), torch::Tensor(), c);
  auto s = r.scores.to(torch::kDouble);
  auto sn = s / s.sum(-1, true);
  auto ids = r.topk_ids;
  auto f = [&](int64_t t0, int64_t t1) {  // E/(K n) * count over tokens [t0, t1)
    std::vector<double> out(E, 0);
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t k = 0; k < K; ++k) out[ids[t][k].item<int64_t>()] += 1.0;
    for (auto& v : out) v *= static_cast<double>(E) / (K * (t1 - t0));
    return out;
  };
  double expert = 0, seq = 0;
  auto fa = f(0, T);
  for (int64_t e = 0; e < E; ++e) expert += fa[e] * sn.select(1, e).mean().item<double>();
  for (int64_t b = 0; b < B; ++b) {
    auto fb = f(b * S, (b + 1) * S);
    for (int64_t e = 0; e < E; ++e) seq += fb[e] * sn.slice(0, b * S, (b + 1) * S).select(1, e).mean().item<double>();
  }
  seq /= B;
  EXPECT_NEAR(ts::nn::expert_balance_loss(r, c, 0.01).item<double>(), 0.01 * expert, 1e-7);
  EXPECT_NEAR(ts::nn::sequence_balance_loss(r, c, B, 0.01).item<double>(), 0.01 * seq, 1e-7);
  EXPECT_DOUBLE_EQ(ts::nn::max_violation(torch::tensor({2, 4, 6, 8})), (8.0 - 5.0) / 5.0);
}

TEST(MoeRouter, ImpossibleShapesAreConfigErrors) {
  ts::config::MoeConfig c;
  c.n_routed_experts = 8, c.n_group = 3;
  EXPECT_THROW(ts::nn::validate_moe_config(c), ts::config::ConfigError);
  c.n_group = 4, c.topk_group = 1, c.top_k = 3;  // only 2 experts eligible
  try {
    ts::nn::validate_moe_config(c);
    FAIL();
  } catch (const ts::config::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.moe.top_k"), std::string::npos) << e.what();
  }
}

// Dense reference of the layer: every expert on every token, gated by the routing's weights.
torch::Tensor dense_reference(ts::nn::MoEImpl& m, const torch::Tensor& x) {
  const auto& c = m.config();
  const int64_t C = x.size(-1), F = c.expert_hidden;
  auto h = x.reshape({-1, C});
  auto r = ts::nn::route(h.matmul(m.router.t()), c.loss_free ? m.expert_bias : torch::Tensor(), c);
  auto gates = torch::zeros({h.size(0), c.n_routed_experts}).scatter(1, r.topk_ids, r.topk_weights);
  auto y = m.shared ? m.shared(h) : torch::zeros_like(h);
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    auto gu = h.matmul(m.w13->weight[e].t());
    auto out = (torch::silu(gu.narrow(1, 0, F)) * gu.narrow(1, F, F)).matmul(m.w2->weight[e].t());
    y = y + gates.select(1, e).unsqueeze(1) * out;
  }
  return y.view(x.sizes());
}

TEST(MoeLayer, ForwardAndGradientsMatchTheDenseReference) {
  for (const char* yaml :
       {"n_routed_experts: 8, top_k: 2, expert_hidden: 16, n_shared_experts: 1",
        "n_routed_experts: 16, top_k: 4, expert_hidden: 8, n_shared_experts: 2, score_func: sigmoid, "
        "routed_scaling_factor: 2.5, n_group: 4, topk_group: 2, loss_free: true"}) {
    auto cfg = moe_config(yaml);
    torch::manual_seed(6);
    ts::nn::MoE m(cfg);
    for (auto& p : m->parameters()) p.data().normal_(0, 0.3);
    if (m->expert_bias.defined()) m->expert_bias.normal_(0, 0.05);
    auto x = torch::randn({3, 7, 32});
    auto g = torch::randn({3, 7, 32});
    auto y = m(x);
    y.backward(g);
    std::map<std::string, torch::Tensor> grads;
    for (auto& p : m->named_parameters()) grads[p.key()] = p.value().grad().clone(), p.value().mutable_grad().reset();
    auto yr = dense_reference(*m, x);
    yr.backward(g);
    EXPECT_TRUE(torch::allclose(y, yr, 1e-4, 1e-5)) << yaml << " max diff " << (y - yr).abs().max().item<float>();
    for (auto& p : m->named_parameters())
      EXPECT_TRUE(torch::allclose(grads[p.key()], p.value().grad(), 1e-4, 1e-5)) << yaml << " " << p.key();
  }
}

TEST(MoeLayer, LossFreeBiasMovesAgainstTheLoadAndIsNotTrained) {
  auto cfg = moe_config("n_routed_experts: 8, top_k: 2, expert_hidden: 8, loss_free: true, bias_update_speed: 0.01");
  torch::manual_seed(8);
  ts::nn::MoE m(cfg);
  for (const auto& p : m->named_parameters()) EXPECT_EQ(p.key().find("expert_bias"), std::string::npos);
  ASSERT_TRUE(m->named_buffers().contains("expert_bias"));
  m->train();
  auto x1 = torch::randn({2, 8, 32}), x2 = torch::randn({2, 8, 32});
  m(x1);
  m(x2);
  // Load since the last update: both training forwards.
  auto load = m->take_load().tokens.to(torch::kFloat);
  m->update_bias();
  EXPECT_TRUE(torch::equal(m->expert_bias, torch::sign(load.mean() - load) * 0.01f));
  // Eval forwards do not move the bias.
  m->eval();
  m(x1);
  auto before = m->expert_bias.clone();
  m->update_bias();
  EXPECT_TRUE(torch::equal(m->expert_bias, before));
}

TEST(MoeLayer, AuxLossOnlyInTrainingAndCapacityDrops) {
  auto cfg = moe_config(
      "n_routed_experts: 4, top_k: 1, expert_hidden: 8, aux_loss_alpha: 0.1, seq_aux_loss_alpha: 0.1, "
      "capacity_factor: 0.25");
  torch::manual_seed(9);
  ts::nn::MoE m(cfg);
  auto x = torch::randn({2, 8, 32});
  m->train();
  auto y = m(x);
  ASSERT_TRUE(m->aux_loss().defined());
  EXPECT_GT(m->aux_loss().item<double>(), 0);
  // capacity = ceil(0.25 * 16 / 4) = 1 slot per expert: everything beyond the first is dropped and
  // those tokens get only the shared expert.
  auto load = m->take_load();
  const int64_t used = (load.tokens > 0).sum().item<int64_t>();
  EXPECT_EQ(load.dropped, 16 - used);
  auto h = x.reshape({16, 32});
  auto ids = ts::nn::route(h.matmul(m->router.t()), torch::Tensor(), m->config()).topk_ids.flatten();
  auto shared_only = m->shared(h);
  int64_t dropped_seen = 0;
  std::set<int64_t> seen;
  for (int64_t t = 0; t < 16; ++t) {
    const bool first = seen.insert(ids[t].item<int64_t>()).second;
    if (!first) {
      ++dropped_seen;
      EXPECT_TRUE(torch::allclose(y.view({16, 32})[t], shared_only[t])) << t;
    }
  }
  EXPECT_EQ(dropped_seen, load.dropped);
  m->eval();
  torch::NoGradGuard ng;
  m(x);
  EXPECT_FALSE(m->aux_loss().defined());
}

TEST(MoeTransformer, FirstKDenseAndNames) {
  auto cfg = moe_config("first_k_dense: 1, loss_free: true");
  ts::nn::Transformer model(cfg);
  EXPECT_TRUE(model->blocks[0]->ffn && !model->blocks[0]->moe);
  EXPECT_TRUE(model->blocks[1]->moe && !model->blocks[1]->ffn);
  EXPECT_EQ(model->moe_layers().size(), 1u);
  EXPECT_TRUE(model->named_parameters().contains("blocks.1.ffn.w13.weight"));
  EXPECT_TRUE(model->named_buffers().contains("blocks.1.ffn.expert_bias"));
  // Dense configs keep working unchanged.
  auto dense = moe_config("");
  dense.model.ffn = "dense";
  ts::nn::Transformer d(dense);
  EXPECT_TRUE(d->moe_layers().empty());
  EXPECT_FALSE(d->aux_loss().defined());
}

std::vector<json> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

TEST(MoeTrainer, MetricsSummaryAndBitExactResume) {
  auto cfg = moe_config("n_routed_experts: 4, top_k: 2, expert_hidden: 16, aux_loss_alpha: 0.01, loss_free: true");
  const auto base = fs::temp_directory_path() / ("tinyseek_moe_" + std::to_string(::getpid()));
  ts::util::remove_all(base);
  auto a = ts::train::train_variant(cfg, "full", base / "full", false);
  ASSERT_EQ(a.status, ts::run::RunStatus::kCompleted);
  EXPECT_TRUE(a.summary["maxvio_global"].is_number());
  EXPECT_EQ(a.summary["report_columns"], json::array({"maxvio_global"}));
  auto lines = read_lines(base / "full" / "metrics.jsonl");
  int train_lines = 0, val_lines = 0;
  for (const auto& j : lines) {
    if (j.contains("loss")) {
      ++train_lines;
      EXPECT_TRUE(j["maxvio_batch"].is_number());
      EXPECT_TRUE(j["aux_loss"].is_number());
      ASSERT_EQ(j["expert_load"].size(), 2u);  // two MoE layers
      int64_t total = 0;
      for (auto v : j["expert_load"][0]) total += v.get<int64_t>();
      EXPECT_EQ(total, 4 * 16 * 2);  // B * S * K slots
    }
    if (j.contains("val_loss")) {
      ++val_lines;
      EXPECT_TRUE(j["maxvio_global"].is_number());
    }
  }
  EXPECT_EQ(train_lines, 6);
  EXPECT_EQ(val_lines, 2);

  auto first = cfg;
  first.train.stop_at = 4;
  ts::train::train_variant(first, "split", base / "split", false);
  ts::train::train_variant(cfg, "split", base / "split", true);
  auto b = read_lines(base / "split" / "metrics.jsonl");
  ASSERT_EQ(b.size(), lines.size());
  for (size_t i = 0; i < b.size(); ++i) {
    lines[i].erase("tokens_per_s");
    b[i].erase("tokens_per_s");
    EXPECT_EQ(lines[i].dump(), b[i].dump()) << i;
  }
  ts::util::remove_all(base);
}

}  // namespace
