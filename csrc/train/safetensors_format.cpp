#include "csrc/train/safetensors_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

namespace ts::train {

size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes = {{"F64", 8}, {"F32", 4},  {"F16", 2},     {"BF16", 2},
                                                      {"I64", 8}, {"I32", 4},  {"I16", 2},     {"I8", 1},
                                                      {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

SafetensorsHeader parse_safetensors(std::string_view file, const std::string& what) {
  auto fail = [&](const std::string& msg) { return std::invalid_argument("safetensors: " + what + ": " + msg); };
  if (file.size() < 8) throw fail(fmt::format("{} bytes, shorter than the 8-byte header size", file.size()));
  uint64_t hs = 0;
  std::memcpy(&hs, file.data(), 8);  // little-endian on every platform tinyseek builds for
  if (hs > file.size() - 8) throw fail(fmt::format("a header of {} bytes runs past the end of the file", hs));
  SafetensorsHeader out;
  out.data_start = 8 + hs;
  const uint64_t data_size = file.size() - out.data_start;
  const auto header = nlohmann::json::parse(file.substr(8, hs), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) throw fail("the header is not a JSON object");
  for (const auto& item : header.items()) {
    const std::string name = item.key();
    const auto& info = item.value();
    if (name == "__metadata__") {
      if (!info.is_object()) throw fail("__metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) throw fail(fmt::format("__metadata__ '{}' is not a string", k));
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& msg) { return fail(fmt::format("tensor '{}': {}", name, msg)); };
    if (!info.is_object()) throw bad("its entry is not an object");
    SafetensorsEntry e;
    e.name = name;
    const auto dt = info.find("dtype"), shape = info.find("shape"), offs = info.find("data_offsets");
    if (dt == info.end() || !dt->is_string()) throw bad("no dtype string");
    e.dtype = dt->get<std::string>();
    const size_t elem = safetensors_dtype_size(e.dtype);
    if (elem == 0) throw bad(fmt::format("unknown dtype '{}'", e.dtype));
    if (shape == info.end() || !shape->is_array()) throw bad("no shape array");
    uint64_t bytes = elem;
    for (const auto& d : *shape) {
      if (!d.is_number_unsigned()) throw bad("a dimension of the shape is not a non-negative integer");
      const uint64_t v = d.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (v != 0 && bytes > std::numeric_limits<uint64_t>::max() / v))
        throw bad("its shape's size overflows");
      e.shape.push_back(static_cast<int64_t>(v));
      bytes *= v;
    }
    if (offs == info.end() || !offs->is_array() || offs->size() != 2 || !(*offs)[0].is_number_unsigned() ||
        !(*offs)[1].is_number_unsigned())
      throw bad("data_offsets is not a pair of non-negative integers");
    e.begin = (*offs)[0].get<uint64_t>();
    e.end = (*offs)[1].get<uint64_t>();
    if (e.begin > e.end || e.end > data_size)
      throw bad(fmt::format("data_offsets [{}, {}) outside the {} bytes of data", e.begin, e.end, data_size));
    if (e.end - e.begin != bytes)
      throw bad(fmt::format("{} bytes of data for a shape of {} bytes", e.end - e.begin, bytes));
    out.tensors.push_back(std::move(e));
  }
  // No two tensors share bytes (a writer's bug, or a file built to alias them).
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& e : out.tensors)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      throw fail(fmt::format("tensors '{}' and '{}' overlap", by_offset[i - 1]->name, by_offset[i]->name));
  return out;
}

}  // namespace ts::train
