#include "csrc/run/kinds.h"

#include <fmt/format.h>

#include <cstdlib>

#include "csrc/nn/model_config.h"

namespace ts::run {

const Kind* find_kind(const std::vector<Kind>& kinds, const std::string& name) {
  for (const auto& k : kinds)
    if (k.name == name) return &k;
  return nullptr;
}

int launch_world_size() {
  const char* w = std::getenv("WORLD_SIZE");
  return w && *w ? std::max(1, std::atoi(w)) : 1;
}

namespace {

void check_variant(const config::Variant& v, const std::vector<Kind>& kinds, int world_size) {
  const Kind* kind = find_kind(kinds, v.config.kind);
  if (!kind) {
    std::vector<std::string> names;
    std::string list;
    for (const auto& k : kinds) names.push_back(k.name), list += (list.empty() ? "" : ", ") + k.name;
    std::string msg = fmt::format("{}: kind: expected one of: {}; got '{}'", v.where("kind"), list, v.config.kind);
    std::string best;
    size_t best_d = SIZE_MAX;
    for (const auto& n : names)
      if (size_t d = config::edit_distance(v.config.kind, n); d < best_d) best_d = d, best = n;
    if (best_d <= 2) msg += "; did you mean '" + best + "'?";
    throw config::ConfigError(msg);
  }
  if (world_size > 1 && !kind->distributed)
    throw config::ConfigError(
        fmt::format("{}: kind: '{}' runs on one process, but this job has {} ranks "
                    "(WORLD_SIZE); use `tinyseek run` without --nproc",
                    v.where("kind"), kind->name, world_size));
  if (kind->builds_model) {
    nn::check_model_config(v.config);
    nn::check_generate_config(v.config);
  }
  if (kind->check) kind->check(v.config, world_size);
}

}  // namespace

void check_experiment(const config::Experiment& ex, const std::vector<Kind>& kinds, int world_size) {
  for (const auto& v : ex.variants) {
    try {
      check_variant(v, kinds, world_size);
    } catch (const config::InvalidKeys& e) {
      throw v.locate(e);
    }
  }
}

}  // namespace ts::run
