// libFuzzer target: the safetensors header check (csrc/train/safetensors_format.h) on arbitrary
// bytes. Every input must either parse, with every tensor's bytes inside the data, or throw
// std::invalid_argument; anything else (a crash, another exception, a leak, undefined behaviour)
// is a finding. scripts/fuzz.sh builds and runs it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

#include "csrc/train/safetensors_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view file(reinterpret_cast<const char*>(data), size);
  try {
    const auto h = ts::train::parse_safetensors(file, "<fuzz>");
    for (const auto& t : h.tensors) {
      // What a reader then does: read each tensor's bytes.
      if (h.data_start + t.end > size) std::abort();
      volatile uint8_t sum = 0;
      for (uint64_t i = t.begin; i < t.end; ++i) sum = sum + data[h.data_start + i];
    }
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
