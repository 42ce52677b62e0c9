// The safetensors container (https://github.com/huggingface/safetensors) without LibTorch: an
// 8-byte little-endian header size, a JSON header {name: {dtype, shape, data_offsets}, optional
// "__metadata__": {string: string}}, then the data. parse_safetensors checks everything a reader
// relies on before any tensor is made, so a damaged or hostile file is one clear error: the header
// inside the file, a JSON object of well-formed entries, known dtypes, non-negative shapes whose
// byte size fits (no overflow), data_offsets inside the data and matching the shape, no two
// tensors overlapping. Torch-free so the fuzzer (fuzz/safetensors_fuzz.cpp) runs it under the
// sanitizers; checkpoint.cpp's safetensors_load makes the tensors from its result.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ts::train {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "BF16", ... (safetensors_dtype_size knows it)
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data (after the header)
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;  // in the header's order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // offset of the data in the file
};

// Bytes per element of a safetensors dtype name; 0 for a name this reader does not know.
size_t safetensors_dtype_size(const std::string& dtype);

// Parses and checks `file` (the whole file's bytes); throws std::invalid_argument naming `what`
// (the file) and, where one is at fault, the tensor.
SafetensorsHeader parse_safetensors(std::string_view file, const std::string& what);

}  // namespace ts::train
