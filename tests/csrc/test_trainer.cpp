// Trainer: bit-exact resume, non-finite loss handling, checkpoint atomicity and safetensors round trip.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "csrc/config/config.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/optim.h"
#include "csrc/train/trainer.h"
#include "csrc/util/fs.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

ts::config::Config tiny_config() {
  auto c = ts::config::parse_config(R"(
name: tiny
data: {seq_len: 32, synthetic_bytes: 60000}
model: {d_model: 32, n_layers: 2, n_heads: 2, ffn_hidden: 64}
train: {steps: 8, batch_size: 4, warmup_steps: 2, eval_every: 4, eval_batches: 2, checkpoint_every: 2, log_every: 100}
)");
  return c;
}

fs::path fresh_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("tinyseek_trainer_" + name + "_" + std::to_string(::getpid()));
  ts::util::remove_all(d);
  return d;
}

std::vector<std::string> metric_lines(const fs::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    auto j = json::parse(line);
    j.erase("tokens_per_s");  // wall-clock, differs between runs
    out.push_back(j.dump());
  }
  return out;
}

// The model as configured plus: multi-token prediction (two depths, their losses and accuracies
// logged), MTP over an MoE model with FP8 projections.
class ResumeIsBitExact : public ::testing::TestWithParam<std::string> {};

TEST_P(ResumeIsBitExact, InEveryLoggedNumberAndTheFinalWeights) {
  auto cfg = tiny_config();
  if (GetParam() != "plain") cfg.model.mtp.depth = 2;
  if (GetParam() == "mtp_moe_fp8") {
    cfg.model.ffn = "moe";
    cfg.model.moe.n_routed_experts = 4;
    cfg.model.moe.top_k = 2;
    cfg.model.moe.expert_hidden = 16;
    cfg.model.moe.loss_free = true;
    cfg.precision.kind = "fp8";
  }
  const auto full = fresh_dir("full_" + GetParam()), split = fresh_dir("split_" + GetParam());
  auto a = ts::train::train_variant(cfg, "default", full, false);
  ASSERT_EQ(a.status, ts::run::RunStatus::kCompleted);

  auto first = cfg;
  first.train.stop_at = 4;
  auto b1 = ts::train::train_variant(first, "default", split, false);
  ASSERT_EQ(b1.status, ts::run::RunStatus::kStopped);
  EXPECT_EQ(b1.summary["steps"], 4);
  auto b2 = ts::train::train_variant(cfg, "default", split, true);
  ASSERT_EQ(b2.status, ts::run::RunStatus::kCompleted);

  // Every logged loss, lr and grad norm is identical (JSON prints doubles round-trip exactly).
  const auto la = metric_lines(full), lb = metric_lines(split);
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) EXPECT_EQ(la[i], lb[i]) << "metrics line " << i;
  // And the final weights are bitwise equal.
  auto wa = ts::train::safetensors_load(full / "checkpoints" / "step_00000008" / "model.safetensors");
  auto wb = ts::train::safetensors_load(split / "checkpoints" / "step_00000008" / "model.safetensors");
  ASSERT_EQ(wa.size(), wb.size());
  for (auto& [k, t] : wa) EXPECT_TRUE(torch::equal(t, wb.at(k))) << k;
  if (GetParam() != "plain") {
    EXPECT_TRUE(wa.count("mtp.1.eh_proj.weight"));
    EXPECT_NE(la.back().find("val_mtp_acc/2"), std::string::npos) << la.back();
    EXPECT_NE(la[0].find("mtp_loss/1"), std::string::npos) << la[0];
  }
  ts::util::remove_all(full);
  ts::util::remove_all(split);
}

INSTANTIATE_TEST_SUITE_P(Models, ResumeIsBitExact, ::testing::Values("plain", "mtp", "mtp_moe_fp8"));

TEST(Trainer, NonFiniteLossStopsAndKeepsLastCheckpoint) {
  auto cfg = tiny_config();
  cfg.train.debug_nan_step = 4;  // the 5th step
  const auto dir = fresh_dir("nan");
  auto r = ts::train::train_variant(cfg, "default", dir, false);
  EXPECT_EQ(r.status, ts::run::RunStatus::kNonFinite);
  EXPECT_NE(r.summary["error"].get<std::string>().find("step 5: non-finite loss"), std::string::npos) << r.summary;
  std::ifstream latest(dir / "checkpoints" / "latest");
  std::string name;
  latest >> name;
  EXPECT_EQ(name, "step_00000004");
  auto w = ts::train::safetensors_load(dir / "checkpoints" / name / "model.safetensors");
  for (auto& [k, t] : w) EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << k;
  ts::util::remove_all(dir);
}

TEST(Trainer, NonFiniteLossCanBeSkipped) {
  auto cfg = tiny_config();
  cfg.train.debug_nan_step = 4;
  cfg.train.on_nonfinite = "skip";
  const auto dir = fresh_dir("skip");
  auto r = ts::train::train_variant(cfg, "default", dir, false);
  EXPECT_EQ(r.status, ts::run::RunStatus::kCompleted);
  EXPECT_EQ(r.summary["skipped_steps"], 1);
  EXPECT_TRUE(std::isfinite(r.summary["final_val_loss"].get<double>()));
  ts::util::remove_all(dir);
}

TEST(Trainer, LearningRateSchedule) {
  ts::config::TrainConfig t;
  t.lr = 1.0;
  t.warmup_steps = 10;
  t.steps = 110;
  t.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(ts::train::lr_at(t, 0), 0.1);
  EXPECT_DOUBLE_EQ(ts::train::lr_at(t, 9), 1.0);
  EXPECT_DOUBLE_EQ(ts::train::lr_at(t, 10), 1.0);
  EXPECT_NEAR(ts::train::lr_at(t, 60), 0.55, 1e-12);
  EXPECT_NEAR(ts::train::lr_at(t, 110), 0.1, 1e-12);
}

TEST(Checkpoint, SafetensorsRoundTripAndAtomicWrite) {
  const auto dir = fresh_dir("st");
  fs::create_directories(dir);
  std::vector<std::pair<std::string, torch::Tensor>> ts_in = {{"a", torch::randn({3, 5})},
                                                              {"b", torch::arange(7, torch::kLong)},
                                                              {"c", torch::randn({4}).to(torch::kBFloat16)}};
  ts::util::atomic_write(dir / "x.safetensors", ts::train::safetensors_serialize(ts_in));
  auto out = ts::train::safetensors_load(dir / "x.safetensors");
  for (auto& [k, t] : ts_in) EXPECT_TRUE(torch::equal(t, out.at(k))) << k;
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "temp file left: " << e.path();
  ts::util::remove_all(dir);
}

}  // namespace
