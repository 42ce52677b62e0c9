// A tensor holding a copy of host values (indices built on the CPU for a decode step).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <type_traits>
#include <vector>

namespace ts::util {

// `shape` over v itself (int32 or int64): a CPU tensor valid while v lives and stays unchanged.
template <class T>
torch::Tensor host_view(const std::vector<T>& v, c10::IntArrayRef shape) {
  static_assert(std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>);
  const auto dtype = std::is_same_v<T, int32_t> ? torch::kInt32 : torch::kInt64;
  return torch::from_blob(const_cast<T*>(v.data()), shape, dtype);
}

// `shape` over a copy of v, on `dev`.
template <class T>
torch::Tensor host_tensor(const std::vector<T>& v, c10::IntArrayRef shape, const torch::Device& dev) {
  return host_view(v, shape).to(dev, /*non_blocking=*/false, /*copy=*/true);
}

// The same, but on the CPU the view of v without the copy: for the indices of an op that runs at
// once and copies what it reads, while v lives.
template <class T>
torch::Tensor host_tensor_view(const std::vector<T>& v, c10::IntArrayRef shape, const torch::Device& dev) {
  return dev.is_cpu() ? host_view(v, shape) : host_tensor(v, shape, dev);
}

}  // namespace ts::util
