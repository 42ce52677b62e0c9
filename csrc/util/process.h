// Starting a child program without a shell: the argument vector goes to the program as it is, so
// no value (a run folder's path, a config's name) is ever parsed by /bin/sh.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace ts::util {

struct ProcessOptions {
  std::map<std::string, std::string> env;  // added to (or replacing in) this process's environment
  // stdout and stderr of the child go to this file (created or truncated); empty: inherited.
  std::filesystem::path output;
};

// Runs argv[0] (an absolute or relative path, not searched on PATH) with argv and waits for it.
// Returns its exit status; 127 when it could not be started; 128 + N when killed by signal N.
int run_process(const std::vector<std::string>& argv, const ProcessOptions& options = {});

}  // namespace ts::util
