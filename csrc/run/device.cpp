#include "csrc/run/device.h"

namespace ts::run {

torch::Device pick_device(const config::TrainConfig& t) {
  const bool have_cuda = torch::cuda::is_available();
  if (t.device == "cuda" && !have_cuda)
    throw config::ConfigError("train.device: 'cuda' was requested but no CUDA device is available");
  const bool cuda = t.device == "cuda" || (t.device == "auto" && have_cuda);
  return cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

}  // namespace ts::run
