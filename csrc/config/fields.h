// The vocabulary of config fields: the errors a check raises and the constraints a visit()
// attaches to a field (csrc/config/config.h). Every section header includes it.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace ts::config {

// A usage or config error: the CLI prints what() on one line and exits with status 2.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A check across fields failed (model.n_heads must divide model.d_model, say). keys[0] is the key
// the message is about, the others are involved; what() is "keys[0]: message". Variant::locate
// turns it into a ConfigError that starts with the file:line of the first of the keys the config
// sets, which is what every caller that has the variant does.
struct InvalidKeys : ConfigError {
  InvalidKeys(std::vector<std::string> keys_, const std::string& message)
      : ConfigError(keys_.at(0) + ": " + message), keys(std::move(keys_)) {}
  std::vector<std::string> keys;
};

// Field constraints, interpreted by every visitor.
struct Range {
  double lo, hi;
};
struct OneOf {
  std::vector<std::string> values;
};
struct NoCheck {};
// A name that becomes one folder of the run's path: 1 to 100 characters from [A-Za-z0-9._-],
// starting with a letter or digit (so never ".", "..", "/x", "a/b" or "-x").
struct PathName {};
inline constexpr size_t kMaxNameLength = 100;
// Throws ConfigError("<what>: ...") unless `name` is a PathName.
void check_path_name(const std::string& name, const std::string& what);

}  // namespace ts::config
