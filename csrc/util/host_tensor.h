// A tensor holding a copy of host values (indices built on the CPU for a decode step).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <type_traits>
#include <vector>

namespace ts::util {

// `shape` over a copy of v (int32 or int64), on `dev`.
template <class T>
torch::Tensor host_tensor(const std::vector<T>& v, c10::IntArrayRef shape, const torch::Device& dev) {
  static_assert(std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>);
  const auto dtype = std::is_same_v<T, int32_t> ? torch::kInt32 : torch::kInt64;
  return torch::from_blob(const_cast<T*>(v.data()), shape, dtype).to(dev, /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace ts::util
