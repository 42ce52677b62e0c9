// Experiment drivers: one per experiment kind (config key `kind`). Each runs one resolved variant.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "csrc/config/config.h"
#include "csrc/train/trainer.h"

namespace ts::experiments {

using Driver = std::function<train::RunOutcome(const config::Config&, const std::string& variant,
                                               const std::filesystem::path& run_dir, bool resume)>;

// kind -> driver. "pretrain" trains the transformer (csrc/train); technique issues add kinds.
const std::map<std::string, Driver>& drivers();

}  // namespace ts::experiments
