#include "experiments/python_module.h"

#include <unistd.h>

#include <system_error>

#include "csrc/util/process.h"
#include "tinyseek_paths.h"

namespace ts::experiments {

namespace fs = std::filesystem;

namespace {

fs::path self_exe() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : p;
}

// The build tree's binary (not an installed copy): it uses the sources' python/ package.
bool is_build_tree_binary() {
  std::error_code ec;
  return fs::equivalent(self_exe(), TINYSEEK_BIN, ec) && !ec;
}

}  // namespace

std::string python_executable() {
  // Installed by pip, the binary sits in the environment's bin/ beside its Python.
  const fs::path dir = self_exe().parent_path();
  if (!dir.empty() && !is_build_tree_binary()) {
    for (const char* name : {"python3", "python"}) {
      const fs::path p = dir / name;
      if (::access(p.c_str(), X_OK) == 0) return p.string();
    }
  }
  return TINYSEEK_PYTHON;
}

int run_python_module(const std::string& module, const std::vector<std::string>& args, const fs::path& log) {
  std::vector<std::string> argv = {python_executable(), "-m", "tinyseek." + module};
  argv.insert(argv.end(), args.begin(), args.end());
  util::ProcessOptions o;
  // The build tree's binary runs this checkout's package; an installed one the installed package.
  const fs::path source_python = fs::path(TINYSEEK_SOURCE_DIR) / "python";
  std::error_code ec;
  if (is_build_tree_binary() && fs::is_directory(source_python, ec)) o.env["PYTHONPATH"] = source_python.string();
  o.output = log;
  return util::run_process(argv, o);
}

}  // namespace ts::experiments
