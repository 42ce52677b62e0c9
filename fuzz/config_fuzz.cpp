// libFuzzer target: the config parser (csrc/config/config.h parse_config) on arbitrary bytes.
// Every input must either parse or throw config::ConfigError; anything else (a crash, another
// exception, a leak, undefined behaviour) is a finding. scripts/fuzz.sh builds and runs it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "csrc/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto c = ts::config::parse_config(text, "<fuzz>");
    (void)ts::config::to_yaml(c);  // a config that parsed prints
  } catch (const ts::config::ConfigError&) {
  }
  return 0;
}
