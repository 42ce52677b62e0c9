// Which device a run uses: train.device (auto | cpu | cuda).
#pragma once

#include <torch/torch.h>

#include "csrc/config/config.h"

namespace ts::run {

// auto: CUDA when a device is present, else CPU. Throws config::ConfigError for 'cuda' without one.
torch::Device pick_device(const config::TrainConfig& t);

}  // namespace ts::run
