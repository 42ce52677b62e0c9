// Filesystem helpers that must not go through std::filesystem::remove_all: the torch wheel's
// libtorch.so exports its own copy of that symbol, which crashes when it wins symbol resolution
// (it does for anything linked against LibTorch). Everything else in std::filesystem is fine.
#pragma once

#include <filesystem>

namespace ts::util {

// Removes `path` and everything below it; a missing path is not an error. Returns entries removed.
std::uintmax_t remove_all(const std::filesystem::path& path);

}  // namespace ts::util
