// Filesystem helpers: atomic file writes, and a remove_all that does not go through
// std::filesystem::remove_all: the torch wheel's libtorch.so exports its own copy of that symbol,
// which crashes when it wins symbol resolution (it does for anything linked against LibTorch).
// Everything else in std::filesystem is fine.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace ts::util {

// Removes `path` and everything below it; a missing path is not an error. Returns entries removed.
std::uintmax_t remove_all(const std::filesystem::path& path);

// Writes `bytes` to `path` via a temp file in the same folder, fsync, rename, fsync of the folder:
// a reader sees the old file or the whole new one, never a part. Creates missing parent folders.
void atomic_write(const std::filesystem::path& path, const std::string& bytes);

// fsync of a file or (directory = true) a folder's entries; errors are ignored (best effort).
void fsync_path(const std::filesystem::path& path, bool directory);

}  // namespace ts::util
