// The pipeline executor's pieces that run in one process: stage splitting, the split
// backward (B then W equals the fused backward), and whole schedules on a group of one
// (DualPipeV on one rank has two stages, so activations and gradients cross stages locally).
// Multi-rank runs over Gloo are tested in tests/python/test_pipeline_dist.py.
#include <gtest/gtest.h>

#include "csrc/nn/transformer.h"
#include "csrc/parallel/executor.h"
#include "csrc/parallel/split_backward.h"

namespace ts::parallel {
namespace {

config::Config tiny_config(int64_t layers) {
  config::Config c;
  c.model.vocab_size = 64;
  c.model.d_model = 16;
  c.model.n_layers = layers;
  c.model.n_heads = 2;
  c.model.ffn_hidden = 24;
  c.data.seq_len = 8;
  return c;
}

// ||a - b|| / ||b|| in double.
double rel(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).norm().item<double>() /
         b.to(torch::kDouble).norm().item<double>();
}

TEST(PipelineStages, SplitIsContiguousAndCoversEveryBlock) {
  const auto s = split_stages(10, 4);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].begin, 0);
  EXPECT_EQ(s[3].end, 10);
  for (size_t i = 1; i < s.size(); ++i) EXPECT_EQ(s[i].begin, s[i - 1].end);
  EXPECT_EQ(s[0].end - s[0].begin, 3);  // earlier stages take the remainder
  EXPECT_TRUE(s[0].first && s[3].last && !s[1].first && !s[1].last);
  EXPECT_THROW(split_stages(3, 4), std::invalid_argument);
  EXPECT_EQ(stage_of_parameter("embed.weight", s), 0);
  EXPECT_EQ(stage_of_parameter("blocks.4.attn.wq.weight", s), 1);
  EXPECT_EQ(stage_of_parameter("head.weight", s), 3);
  EXPECT_EQ(stage_of_parameter("mtp.0.eh_proj.weight", s), 3);
  EXPECT_THROW(stage_of_parameter("mystery.weight", s), std::invalid_argument);
}

// B (input gradient only) then W (weight gradients) gives what one fused backward gives, and
// B alone leaves every parameter gradient untouched.
TEST(SplitBackward, InputThenWeightEqualsFullBackward) {
  torch::manual_seed(3);
  nn::Transformer model(tiny_config(2));
  const auto x = torch::randn({2, 8, 16});
  const auto g = torch::randn({2, 8, 16});

  auto in1 = x.clone().requires_grad_(true);
  full_backward(model->run_blocks(in1, 0, 2), g, in1);
  std::map<std::string, at::Tensor> ref;
  for (const auto& p : model->named_parameters())
    if (p.value().grad().defined()) ref[p.key()] = p.value().grad().clone();
  const at::Tensor dx_ref = in1.grad().clone();
  model->zero_grad(true);

  auto in2 = x.clone().requires_grad_(true);
  SplitBackward split;
  const at::Tensor dx = split.input_backward(model->run_blocks(in2, 0, 2), g, in2);
  EXPECT_GT(split.weight_nodes(), 0u);
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined()) << "B must not touch weight gradients";
  EXPECT_LE(rel(dx, dx_ref), 1e-6);
  split.weight_backward();
  EXPECT_FALSE(split.pending());
  ASSERT_EQ(ref.size(), model->blocks[0]->parameters().size() + model->blocks[1]->parameters().size());
  for (const auto& [name, r] : ref) {
    const auto& p = model->named_parameters()[name];
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_LE(rel(p.grad(), r), 1e-6) << name;
  }
}

class OneRankSchedules : public ::testing::TestWithParam<std::tuple<ScheduleKind, int>> {};

TEST_P(OneRankSchedules, MatchSequentialTraining) {
  const auto [kind, M] = GetParam();
  auto dist = Dist::init(LaunchEnv{}, DistOptions{});
  torch::manual_seed(5);
  nn::Transformer model(tiny_config(4));
  const auto inputs = torch::randint(0, 64, {2 * M, 8});
  const auto targets = torch::randint(0, 64, {2 * M, 8});
  const auto reference = sequential_reference(model, inputs, targets, M, 0.3);
  const double ref_loss = reference.loss;
  const auto& ref = reference.grads;

  PipelineExecutor exec(*dist, make_schedule(kind, 1, M), model);
  const StepResult r = exec.step(inputs, targets);
  EXPECT_LE(std::abs(r.loss - ref_loss) / ref_loss, 1e-6);
  ASSERT_EQ(exec.parameters().size(), ref.size());
  for (const auto& p : exec.parameters()) {
    ASSERT_TRUE(p.tensor.grad().defined()) << p.name;
    EXPECT_LE(rel(p.tensor.grad(), ref.at(p.name)), 1e-6) << p.name;
  }
  EXPECT_EQ(r.busy.size(), 1u);
  EXPECT_GT(r.seconds, 0);
  EXPECT_LE(r.busy[0], r.seconds * 1.0001);
}

INSTANTIATE_TEST_SUITE_P(Kinds, OneRankSchedules,
                         ::testing::Values(std::make_tuple(ScheduleKind::k1F1B, 3),
                                           std::make_tuple(ScheduleKind::kZB1P, 3),
                                           std::make_tuple(ScheduleKind::kDualPipeV, 2),
                                           std::make_tuple(ScheduleKind::kDualPipeV, 4)));

// MoE stages balance as in pretraining: with balance losses the pipelined gradients equal the
// sequential ones that include them (and differ from those without), and the loss-free bias
// moves after the optimizer step, for every schedule on a group of one.
TEST(PipelineExecutor, MoeBalancingMatchesSequentialTraining) {
  auto cfg = tiny_config(4);
  cfg.model.ffn = "moe";
  cfg.model.moe.n_routed_experts = 4;
  cfg.model.moe.top_k = 2;
  cfg.model.moe.expert_hidden = 8;
  cfg.model.moe.first_k_dense = 1;
  cfg.model.moe.aux_loss_alpha = 0.1;
  cfg.model.moe.seq_aux_loss_alpha = 0.1;
  cfg.model.moe.loss_free = true;
  auto no_aux = cfg;
  no_aux.model.moe.aux_loss_alpha = no_aux.model.moe.seq_aux_loss_alpha = 0;
  auto dist = Dist::init(LaunchEnv{}, DistOptions{});
  for (auto [kind, M] : {std::pair{ScheduleKind::k1F1B, 3}, {ScheduleKind::kZB1P, 3}, {ScheduleKind::kDualPipeV, 2}}) {
    SCOPED_TRACE(schedule_kind_name(kind));
    torch::manual_seed(5);
    nn::Transformer model(cfg);
    torch::manual_seed(5);
    nn::Transformer plain(no_aux);  // the same weights, no balance losses
    const auto inputs = torch::randint(0, 64, {2 * M, 8});
    const auto targets = torch::randint(0, 64, {2 * M, 8});
    const auto ref = sequential_reference(model, inputs, targets, M, 0.3);
    const auto ref_plain = sequential_reference(plain, inputs, targets, M, 0.3);

    PipelineExecutor exec(*dist, make_schedule(kind, 1, M), model);
    const StepResult r = exec.step(inputs, targets);
    EXPECT_LE(std::abs(r.loss - ref.loss) / ref.loss, 1e-6);
    double router_change = 0;
    for (const auto& p : exec.parameters()) {
      ASSERT_TRUE(p.tensor.grad().defined()) << p.name;
      EXPECT_LE(rel(p.tensor.grad(), ref.grads.at(p.name)), 1e-6) << p.name;
      if (p.name.ends_with("router"))
        router_change = std::max(router_change, rel(ref.grads.at(p.name), ref_plain.grads.at(p.name)));
    }
    EXPECT_GT(router_change, 1e-3) << "the balance losses should change the router's gradient";

    auto& moe = *model->blocks[1]->moe;
    ASSERT_TRUE(moe.step_load().defined());
    EXPECT_EQ(moe.step_load().sum().item<int64_t>(), 2 * M * 8 * 2);  // the step's tokens x top-k, once
    EXPECT_EQ(moe.expert_bias.abs().sum().item<double>(), 0);
    exec.after_optimizer_step();
    EXPECT_GT(moe.expert_bias.abs().sum().item<double>(), 0) << "the loss-free bias should move";
  }
}

// Multi-token prediction on the last stage (an MoE MTP block, so its balance losses and bias ride
// along): the pipelined gradients equal sequential training with the MTP loss, and differ from
// those without it, for every schedule on a group of one.
TEST(PipelineExecutor, MtpMatchesSequentialTraining) {
  auto cfg = tiny_config(4);
  cfg.model.mtp.depth = 2;
  cfg.model.ffn = "moe";
  cfg.model.moe.n_routed_experts = 4;
  cfg.model.moe.top_k = 2;
  cfg.model.moe.expert_hidden = 8;
  cfg.model.moe.first_k_dense = 3;  // the last main block and both MTP blocks are MoE
  cfg.model.moe.aux_loss_alpha = 0.1;
  cfg.model.moe.loss_free = true;
  auto dist = Dist::init(LaunchEnv{}, DistOptions{});
  for (auto [kind, M] : {std::pair{ScheduleKind::k1F1B, 3}, {ScheduleKind::kZB1P, 3}, {ScheduleKind::kDualPipeV, 2}}) {
    SCOPED_TRACE(schedule_kind_name(kind));
    torch::manual_seed(5);
    nn::Transformer model(cfg);
    const auto inputs = torch::randint(0, 64, {2 * M, 8});
    const auto targets = torch::randint(0, 64, {2 * M, 8});
    const auto ref = sequential_reference(model, inputs, targets, M, 0.3);
    const auto ref_zero = sequential_reference(model, inputs, targets, M, 0.0);  // MTP weighted 0
    PipelineExecutor exec(*dist, make_schedule(kind, 1, M), model);
    exec.set_mtp_loss_weight(0.3);
    const StepResult r = exec.step(inputs, targets);
    EXPECT_LE(std::abs(r.loss - ref.loss) / ref.loss, 1e-6);
    EXPECT_EQ(ref.loss, ref_zero.loss);  // the reported loss is the main one
    bool mtp_seen = false;
    for (const auto& p : exec.parameters()) {
      ASSERT_TRUE(p.tensor.grad().defined()) << p.name;
      EXPECT_LE(rel(p.tensor.grad(), ref.grads.at(p.name)), 1e-6) << p.name;
      mtp_seen = mtp_seen || p.name.starts_with("mtp.1.");
    }
    EXPECT_TRUE(mtp_seen);
    EXPECT_GT(rel(ref.grads.at("embed.weight"), ref_zero.grads.at("embed.weight")), 1e-4);
    auto& moe = *model->mtp[1]->block->moe;
    EXPECT_EQ(moe.expert_bias.abs().sum().item<double>(), 0);
    exec.after_optimizer_step();
    EXPECT_GT(moe.expert_bias.abs().sum().item<double>(), 0) << "the MTP block's loss-free bias should move";
  }
}

TEST(PipelineExecutor, RejectsAScheduleForAnotherWorldSize) {
  auto dist = Dist::init(LaunchEnv{}, DistOptions{});
  nn::Transformer model(tiny_config(4));
  EXPECT_THROW(PipelineExecutor(*dist, make_schedule(ScheduleKind::k1F1B, 2, 2), model), std::invalid_argument);
}

}  // namespace
}  // namespace ts::parallel
