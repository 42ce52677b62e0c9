#include "experiments/kinds.h"

#include <fmt/format.h>

#include "csrc/parallel/pipeline_train.h"
#include "csrc/rl/grpo.h"
#include "csrc/train/data.h"
#include "csrc/train/trainer.h"
#include "experiments/attention_ablation.h"
#include "experiments/cost_study.h"
#include "experiments/fp8_accumulation.h"
#include "experiments/moe_ep.h"
#include "experiments/mtp_study.h"

namespace ts::experiments {

namespace {
// train.init_from is read where the pretraining objective builds the model (pretrain and the
// studies that pretrain); the other kinds would ignore it silently, so it is an error there.
void reject_init_from(const config::Config& c, const char* instead = "") {
  if (!c.train.init_from.empty())
    throw config::InvalidKeys({"train.init_from"}, fmt::format("kind {} does not read it{}", c.kind, instead));
}
}  // namespace

const std::vector<run::Kind>& kinds() {
  static const std::vector<run::Kind> k = {
      {"pretrain",
       "train the transformer on next-token prediction (csrc/train/trainer.h); data- and expert-parallel under "
       "tinyseek launch or torchrun",
       &train::train_variant, /*distributed=*/true, /*builds_model=*/true, /*trains=*/true,
       [](const config::Config& c, int world) {
         train::check_pretrain_config(c, world);
         train::check_data_config(c);
       }},
      {"grpo", "GRPO with rule rewards from a trained run (grpo.init_from; csrc/rl/grpo.h)", &rl::train_grpo, false,
       true, true,
       [](const config::Config& c, int) {
         reject_init_from(c, " (GRPO starts from grpo.init_from)");
         rl::check_grpo_config(c);
       }},
      {"attention_ablation", "pretrain, then time KV-cached decoding at several contexts", &run_attention_ablation,
       false, true, true, [](const config::Config& c, int) { check_attention_ablation_config(c); }},
      {"cost_study",
       "pretrain, then count parameters, KV bytes and FLOPs and time decoding; the report compares the first "
       "variant with the others",
       &run_cost_study, false, true, true, [](const config::Config& c, int) { check_cost_study_config(c); }},
      {"mtp", "pretrain (with or without MTP), then decode held-out text plain and speculatively with the MTP modules",
       &run_mtp_study, false, true, true, [](const config::Config& c, int) { check_mtp_study_config(c); }},
      {"pipeline", "pipeline-parallel training over c10d, one rank per stage group (tinyseek launch)",
       &parallel::train_pipeline, /*distributed=*/true, true, true,
       [](const config::Config& c, int world) {
         reject_init_from(c);
         parallel::check_pipeline_config(c, world);
         train::check_data_config(c);
       }},
      {"moe_ep", "expert-parallel MoE layer against the one-process layer (tinyseek launch)", &run_moe_ep, true, true,
       /*trains=*/false,
       [](const config::Config& c, int world) {
         reject_init_from(c);
         check_moe_ep_config(c, world);
       }},
      {"fp8_accumulation", "FP8 GEMM accumulation error against float64 (V3's accumulation study)",
       &run_fp8_accumulation, false, /*builds_model=*/false, /*trains=*/false,
       [](const config::Config& c, int) {
         reject_init_from(c);
         check_fp8_accumulation_config(c);
       }},
  };
  return k;
}

}  // namespace ts::experiments
