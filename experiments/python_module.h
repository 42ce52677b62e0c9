// The Python helpers (plots, charts) that reports call: `python -m tinyseek.<module> ARGS...`,
// started with an argument vector (csrc/util/process.h), never through a shell. The build tree's
// binary runs the project venv's Python with this checkout's python/ on PYTHONPATH; a binary that
// pip installed runs the Python beside it (its environment's bin/) and the installed package.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace ts::experiments {

// The Python that runs the helpers.
std::string python_executable();

// Returns the exit status (0: done). `log`: where the helper's output goes (empty: inherited).
int run_python_module(const std::string& module, const std::vector<std::string>& args,
                      const std::filesystem::path& log = {});

}  // namespace ts::experiments
