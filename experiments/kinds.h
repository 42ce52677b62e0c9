// Every experiment kind tinyseek runs (config key `kind`), listed once.
#pragma once

#include <vector>

#include "csrc/run/kinds.h"

namespace ts::experiments {

const std::vector<run::Kind>& kinds();

}  // namespace ts::experiments
