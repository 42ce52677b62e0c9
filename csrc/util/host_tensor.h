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

// The same, but on the CPU a view of v itself, without the copy: for a tensor used only while v
// lives and stays unchanged (the indices of an op that is run at once, which copies what it reads).
template <class T>
torch::Tensor host_tensor_view(const std::vector<T>& v, c10::IntArrayRef shape, const torch::Device& dev) {
  static_assert(std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>);
  if (!dev.is_cpu()) return host_tensor(v, shape, dev);
  return torch::from_blob(const_cast<T*>(v.data()), shape, std::is_same_v<T, int32_t> ? torch::kInt32 : torch::kInt64);
}

}  // namespace ts::util
