#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "csrc/config/config.h"

namespace fs = std::filesystem;
using ts::config::ConfigError;

namespace {

std::string write_tmp(const std::string& name, const std::string& text) {
  auto p = fs::temp_directory_path() / ("tinyseek_test_" + name);
  std::ofstream(p) << text;
  return p.string();
}

std::string error_of(const std::string& path, const std::vector<std::string>& sets = {}) {
  try {
    ts::config::load_experiment(path, sets);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsAndValues) {
  auto c = ts::config::parse_config("name: x\nmodel:\n  d_model: 64\ntrain:\n  lr: 1e-3\n  steps: 1e3\n");
  EXPECT_EQ(c.name, "x");
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.train.steps, 1000);
  EXPECT_EQ(c.model.n_layers, ts::config::ModelConfig{}.n_layers);
}

TEST(Config, MisspeltKeyNamesFileLineAndSuggestion) {
  auto p = write_tmp("typo.yaml", "name: t\nmodel:\n  d_model: 64\n  n_layrs: 2\n");
  const auto e = error_of(p);
  EXPECT_NE(e.find(p + ":4: model.n_layrs: unknown key; did you mean 'model.n_layers'?"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << "one line: " << e;
}

TEST(Config, WrongTypeAndRange) {
  auto p = write_tmp("type.yaml", "train:\n  steps: many\n");
  EXPECT_NE(error_of(p).find(":2: train.steps: expected an integer in [1, 1e+09], got 'many'"), std::string::npos)
      << error_of(p);
  p = write_tmp("range.yaml", "train:\n  lr: -1\n");
  EXPECT_NE(error_of(p).find(":2: train.lr: expected a number in [0, 10], got -1"), std::string::npos) << error_of(p);
  p = write_tmp("enum.yaml", "train:\n  device: cdua\n");
  EXPECT_NE(error_of(p).find("did you mean 'cuda'?"), std::string::npos) << error_of(p);
  p = write_tmp("section.yaml", "train: 3\n");
  EXPECT_NE(error_of(p).find(":1: train: expected a mapping"), std::string::npos) << error_of(p);
}

TEST(Config, MissingFileAndBadYaml) {
  EXPECT_NE(error_of("/nonexistent/x.yaml").find("/nonexistent/x.yaml: cannot read"), std::string::npos);
  auto p = write_tmp("bad.yaml", "train:\n  steps: [1,\n");
  EXPECT_NE(error_of(p).find("invalid YAML"), std::string::npos) << error_of(p);
}

TEST(Config, SetOverridesAndVariants) {
  auto p = write_tmp("variants.yaml",
                     "name: v\ntrain:\n  steps: 10\nvariants:\n  small:\n    model.d_model: 32\n"
                     "  big:\n    model:\n      d_model: 256\n      n_heads: 8\n");
  auto ex = ts::config::load_experiment(p, {"train.steps=20"});
  ASSERT_EQ(ex.variants.size(), 2u);
  EXPECT_EQ(ex.variants[0].name, "small");
  EXPECT_EQ(ex.variants[0].config.model.d_model, 32);
  EXPECT_EQ(ex.variants[1].config.model.d_model, 256);
  EXPECT_EQ(ex.variants[1].config.model.n_heads, 8);
  EXPECT_EQ(ex.variants[1].config.model.n_layers, ts::config::ModelConfig{}.n_layers);  // rest of section kept
  for (const auto& v : ex.variants) EXPECT_EQ(v.config.train.steps, 20);

  const auto e = error_of(p, {"model.d_modle=3"});
  EXPECT_NE(e.find("--set model.d_modle=3: model.d_modle: unknown key; did you mean 'model.d_model'?"),
            std::string::npos)
      << e;
  EXPECT_NE(error_of(p, {"nonsense"}).find("expected KEY=VALUE"), std::string::npos);
  auto bad_variant = write_tmp("badvariant.yaml", "variants:\n  a:\n    train.stesp: 3\n");
  EXPECT_NE(error_of(bad_variant).find(":3 (variant 'a'): train.stesp: unknown key"), std::string::npos)
      << error_of(bad_variant);
  // An unknown section given as a mapping: the section the variant creates carries its line (it
  // had only the file before, found by the config mutation corpus).
  auto bad_section = write_tmp("badsection.yaml", "name: v\nvariants:\n  a:\n    xmodel: {mtp: {depth: 1}}\n");
  EXPECT_NE(error_of(bad_section).find(":4 (variant 'a'): xmodel: unknown key; did you mean 'model'?"),
            std::string::npos)
      << error_of(bad_section);
  // An existing section keeps citing the file for the keys the variant did not set.
  auto mixed = write_tmp("mixed.yaml", "name: v\nmodel:\n  d_modle: 64\nvariants:\n  a:\n    model: {n_heads: 2}\n");
  EXPECT_NE(error_of(mixed).find("mixed.yaml:3: model.d_modle: unknown key"), std::string::npos) << error_of(mixed);
}

TEST(Config, ResolvedYamlRoundTrips) {
  auto c = ts::config::parse_config("name: rt\nmodel:\n  d_model: 96\ntrain:\n  lr: 0.00123\n");
  auto again = ts::config::parse_config(ts::config::to_yaml(c));
  EXPECT_EQ(ts::config::to_yaml(c), ts::config::to_yaml(again));
  EXPECT_EQ(again.model.d_model, 96);
  EXPECT_DOUBLE_EQ(again.train.lr, 0.00123);
}

TEST(Config, EditDistance) {
  EXPECT_EQ(ts::config::edit_distance("d_modle", "d_model"), 1u);  // one transposition
  EXPECT_EQ(ts::config::edit_distance("cdua", "cpu"), 2u);
  EXPECT_EQ(ts::config::edit_distance("", "abc"), 3u);
}

}  // namespace
