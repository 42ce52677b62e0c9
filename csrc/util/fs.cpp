#include "csrc/util/fs.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ts::util {

namespace {
thread_local std::uintmax_t g_removed = 0;
int remove_entry(const char* p, const struct stat*, int, struct FTW*) {
  if (::remove(p) != 0) return errno;
  ++g_removed;
  return 0;
}
}  // namespace

std::uintmax_t remove_all(const std::filesystem::path& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return 0;
  g_removed = 0;
  // Depth-first, children before parents, symlinks not followed.
  if (int err = ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS); err != 0)
    throw std::runtime_error("cannot remove " + path.string() + ": " + std::strerror(err > 0 ? err : errno));
  return g_removed;
}

}  // namespace ts::util
