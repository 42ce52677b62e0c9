// What every run shares (csrc/run): names that are one path component, checks of every variant
// before anything runs with the file:line of the key, the kind registry's rules, the run folder and
// metrics.jsonl's truncation on resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "csrc/config/config.h"
#include "csrc/run/kinds.h"
#include "csrc/run/run_folder.h"
#include "csrc/util/fs.h"

namespace fs = std::filesystem;
using ts::config::ConfigError;

namespace {

std::string write_tmp(const std::string& name, const std::string& text) {
  auto p = fs::temp_directory_path() / ("tinyseek_run_test_" + name);
  std::ofstream(p) << text;
  return p.string();
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

// Two kinds: one that builds a model on one process, one that runs distributed with its own check.
std::vector<ts::run::Kind> test_kinds() {
  return {{"pretrain", "", nullptr, false, true, true, nullptr},
          {"pipeline", "", nullptr, true, true, true, [](const ts::config::Config& c, int world) {
             if (c.model.n_layers < world) throw ts::config::InvalidKeys({"model.n_layers"}, "needs a block per rank");
           }}};
}

TEST(Names, OnlySinglePathComponents) {
  for (const std::string& bad :
       std::vector<std::string>{"", "/", "..", ".", "../../x", "a/b", "x'; touch /tmp/PWNED; echo '", "-x", ".hidden",
                                "sp ace", std::string(101, 'a'), "caf\xC3\xA9"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(ts::config::check_path_name(bad, "name"), ConfigError);
    const auto e = error_of([&] { ts::config::parse_config("name: \"" + bad + "\"\n", "c.yaml"); });
    EXPECT_EQ(e.rfind("c.yaml:1: name: ", 0), 0u) << e;
  }
  for (const std::string& good :
       std::vector<std::string>{"quickstart", "moe_balance-2", "v1.2", "A", std::string(100, 'a')})
    EXPECT_NO_THROW(ts::config::check_path_name(good, "name")) << good;
  const auto p = write_tmp("variant_names.yaml", "name: ok\nvariants:\n  good: {}\n  ../up: {}\n");
  const auto e = error_of([&] { ts::config::load_experiment(p, {}); });
  EXPECT_EQ(e.rfind(p + ":4: variants: '../up'", 0), 0u) << e;
}

TEST(CheckExperiment, ASecondInvalidVariantIsFoundBeforeAnythingRuns) {
  const auto p = write_tmp("second_bad.yaml",
                           "name: two\nmodel:\n  d_model: 32\n  n_heads: 4\nvariants:\n  fine: {}\n  bad:\n"
                           "    model.n_heads: 3\n");
  const auto ex = ts::config::load_experiment(p, {});
  const auto e = error_of([&] { ts::run::check_experiment(ex, test_kinds(), 1); });
  EXPECT_EQ(e, p + ":8 (variant 'bad'): model.n_heads: must divide model.d_model (32), got 3");
  // A key left at its default: the line of the other key involved.
  const auto q = write_tmp("default_key.yaml", "name: d\nmodel:\n  d_model: 30\n");
  const auto e2 = error_of([&] { ts::run::check_experiment(ts::config::load_experiment(q, {}), test_kinds(), 1); });
  EXPECT_EQ(e2.rfind(q + ":3: model.n_heads: must divide model.d_model (30)", 0), 0u) << e2;
  // --set names itself.
  const auto e3 = error_of([&] {
    ts::run::check_experiment(ts::config::load_experiment(q, {"model.d_model=32", "model.moe.n_group=3"}), test_kinds(),
                              1);
  });
  EXPECT_EQ(e3, "");  // ffn is dense: the moe section is not checked
  const auto e4 = error_of([&] {
    ts::run::check_experiment(
        ts::config::load_experiment(q, {"model.d_model=32", "model.ffn=moe", "model.moe.n_group=3"}), test_kinds(), 1);
  });
  EXPECT_EQ(e4.rfind("--set model.moe.n_group=3: model.moe.n_group: must divide n_routed_experts (8), got 3", 0), 0u)
      << e4;
}

TEST(CheckExperiment, KindsAndWorldSize) {
  const auto p = write_tmp("kind.yaml", "name: k\nkind: pretrian\n");
  const auto e = error_of([&] { ts::run::check_experiment(ts::config::load_experiment(p, {}), test_kinds(), 1); });
  EXPECT_EQ(e, p + ":2: kind: expected one of: pretrain, pipeline; got 'pretrian'; did you mean 'pretrain'?");
  const auto q = write_tmp("kind2.yaml", "name: k\nkind: pretrain\n");
  const auto e2 = error_of([&] { ts::run::check_experiment(ts::config::load_experiment(q, {}), test_kinds(), 4); });
  EXPECT_NE(e2.find(q + ":2: kind: 'pretrain' runs on one process, but this job has 4 ranks"), std::string::npos) << e2;
  const auto r = write_tmp("kind3.yaml", "name: k\nkind: pipeline\nmodel:\n  n_layers: 2\n");
  const auto e3 = error_of([&] { ts::run::check_experiment(ts::config::load_experiment(r, {}), test_kinds(), 4); });
  EXPECT_EQ(e3, r + ":4: model.n_layers: needs a block per rank");
  // The generation limits are checked with the model.
  const auto g = write_tmp("gen.yaml", "name: g\ndata:\n  seq_len: 32\ngenerate:\n  max_new_tokens: 32\n");
  const auto e4 = error_of([&] { ts::run::check_experiment(ts::config::load_experiment(g, {}), test_kinds(), 1); });
  EXPECT_EQ(e4.rfind(g + ":5: generate.max_new_tokens: must leave room for a prompt", 0), 0u) << e4;
}

TEST(RunFolder, MetricsAreTruncatedOnResumeAndAFreshRunStartsEmpty) {
  const auto dir = fs::temp_directory_path() / ("tinyseek_run_folder_" + std::to_string(::getpid()));
  ts::util::remove_all(dir);
  const ts::run::RunFolder folder(dir);
  folder.write_config(ts::config::Config{});
  EXPECT_TRUE(fs::exists(dir / ts::run::kConfigFile));
  {
    ts::run::MetricsLog log(folder.metrics_path(), -1);
    for (int s = 1; s <= 5; ++s) log.write({{"step", s}, {"loss", 1.0 / s}});
  }
  {
    std::ofstream(folder.metrics_path(), std::ios::app) << "{\"step\": 6, \"lo";  // cut short by a crash
    ts::run::MetricsLog log(folder.metrics_path(), 3);
    log.write({{"step", 4}, {"loss", 0.5}, {"text", "bad \xFF byte"}});
  }
  std::ifstream in(folder.metrics_path());
  std::vector<int> steps;
  for (std::string line; std::getline(in, line);) steps.push_back(nlohmann::json::parse(line)["step"].get<int>());
  EXPECT_EQ(steps, (std::vector<int>{1, 2, 3, 4}));
  { ts::run::MetricsLog fresh(folder.metrics_path(), -1); }
  EXPECT_EQ(fs::file_size(folder.metrics_path()), 0u);
  EXPECT_FALSE(folder.read_summary().has_value());
  folder.write_summary({{"status", "completed"}});
  EXPECT_EQ(folder.read_summary()->at("status"), "completed");
  folder.clear();
  EXPECT_FALSE(folder.read_summary().has_value());
  ts::util::remove_all(dir);
}

}  // namespace
