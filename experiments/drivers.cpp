#include "experiments/drivers.h"

#include "csrc/parallel/pipeline_train.h"
#include "experiments/attention_ablation.h"
#include "experiments/fp8_accumulation.h"
#include "experiments/moe_ep.h"

namespace ts::experiments {

const std::map<std::string, Driver>& drivers() {
  static const std::map<std::string, Driver> m = {
      {"pretrain", &train::train_variant},
      {"attention_ablation", &run_attention_ablation},
      {"fp8_accumulation", &run_fp8_accumulation},
      {"pipeline", &parallel::train_pipeline},
      {"moe_ep", &run_moe_ep},
  };
  return m;
}

}  // namespace ts::experiments
