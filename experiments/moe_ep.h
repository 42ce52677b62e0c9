// The `moe_ep` experiment kind: expert parallelism for the DeepSeekMoE layer (csrc/parallel/
// expert_parallel.h) checked across real processes (`tinyseek launch --nproc W CONFIG`).
#pragma once

#include <filesystem>
#include <string>

#include "csrc/config/config.h"
#include "csrc/run/outcome.h"

namespace ts::experiments {

// Every rank builds the same MoE layer (model.moe, same seed) twice: whole, as the reference,
// and sharded over its expert-parallel group (parallel.expert consecutive ranks; 0 = all W; the
// W / parallel.expert groups are data-parallel replicas). The reference runs forward and
// backward on the global batch (W x train.batch_size sequences of data.seq_len random vectors);
// the sharded layer on this rank's slice, with dispatch and combine by all-to-all inside the
// group. Compared per rank: the output, the input gradient, the gradients of this rank's experts
// (summed over the replicas) and the summed gradients of the replicated router and shared
// experts: max ||a - b|| / ||b|| must stay within pipeline.check_tolerance or the run fails.
// Then train.steps timed forward+backward passes of the sharded layer. Rank 0 writes
// config.resolved.yaml and summary.json ("parity", "ep_step_ms").
// model.ffn is moe, parallel.expert divides the job's ranks and the experts split evenly over a
// group. Throws config::InvalidKeys.
void check_moe_ep_config(const config::Config& cfg, int world_size);

run::RunOutcome run_moe_ep(const config::Config& cfg, const std::string& variant, const std::filesystem::path& run_dir,
                           bool resume);

}  // namespace ts::experiments
