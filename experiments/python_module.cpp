#include "experiments/python_module.h"

#include "csrc/util/process.h"
#include "tinyseek_paths.h"

namespace ts::experiments {

int run_python_module(const std::string& module, const std::vector<std::string>& args,
                      const std::filesystem::path& log) {
  std::vector<std::string> argv = {TINYSEEK_PYTHON, "-m", "tinyseek." + module};
  argv.insert(argv.end(), args.begin(), args.end());
  util::ProcessOptions o;
  o.env["PYTHONPATH"] = std::string(TINYSEEK_SOURCE_DIR) + "/python";
  o.output = log;
  return util::run_process(argv, o);
}

}  // namespace ts::experiments
