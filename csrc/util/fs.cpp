#include "csrc/util/fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ts::util {

namespace fs = std::filesystem;

namespace {
thread_local std::uintmax_t g_removed = 0;
int remove_entry(const char* p, const struct stat*, int, struct FTW*) {
  if (::remove(p) != 0) return errno;
  ++g_removed;
  return 0;
}
}  // namespace

std::uintmax_t remove_all(const fs::path& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return 0;
  g_removed = 0;
  // Depth-first, children before parents, symlinks not followed.
  if (int err = ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS); err != 0)
    throw std::runtime_error("cannot remove " + path.string() + ": " + std::strerror(err > 0 ? err : errno));
  return g_removed;
}

void fsync_path(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void atomic_write(const fs::path& path, const std::string& bytes) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + tmp.string() + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      fs::remove(tmp);
      throw std::runtime_error("cannot write " + tmp.string() + ": " + err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string err = std::strerror(errno);
    fs::remove(tmp);
    throw std::runtime_error("cannot flush " + tmp.string() + ": " + err);
  }
  fs::rename(tmp, path);
  fsync_path(path.has_parent_path() ? path.parent_path() : fs::path("."), /*directory=*/true);
}

}  // namespace ts::util
