#include "experiments/drivers.h"

namespace ts::experiments {

const std::map<std::string, Driver>& drivers() {
  static const std::map<std::string, Driver> m = {
      {"pretrain", &train::train_variant},
  };
  return m;
}

}  // namespace ts::experiments
