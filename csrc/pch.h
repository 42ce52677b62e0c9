// Precompiled header for every LibTorch target: the heavy headers, parsed once per build.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>
