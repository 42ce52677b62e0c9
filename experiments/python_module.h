// The Python helpers (plots, charts) that reports call: `python -m tinyseek.<module> ARGS...` with
// the project venv's Python and this checkout's python/ on PYTHONPATH, started with an argument
// vector (csrc/util/process.h), never through a shell.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace ts::experiments {

// Returns the exit status (0: done). `log`: where the helper's output goes (empty: inherited).
int run_python_module(const std::string& module, const std::vector<std::string>& args,
                      const std::filesystem::path& log = {});

}  // namespace ts::experiments
