// The `pipeline` experiment kind: trains the transformer with a pipeline schedule over c10d,
// one rank per process (`tinyseek launch --nproc N CONFIG` or torchrun's variables).
//
// Per variant: builds the schedule for WORLD_SIZE ranks, the whole model on every rank (same
// seed, so stage copies agree), and trains train.steps steps of train.batch_size x
// pipeline.microbatches sequences on the one training loop (train/loop.h: AdamW with warmup +
// cosine, global-norm clipping across ranks with each stage counted once, checkpoints of every
// rank's stages under checkpoints/rank_<r>/, --resume, Ctrl-C). MoE layers balance as in
// pretraining: their balance losses are part of each micro-batch's loss, and the loss-free bias
// moves after every optimizer step. Options:
//   pipeline.check_sequential  before step 0, every rank also runs the step's batch through
//       the whole model on its own (the sequential reference) and compares its stages' loss
//       and gradients after the pipelined step: ||g_pipe - g_seq|| / ||g_seq|| per tensor
//       must stay within pipeline.check_tolerance, or the run fails.
//   pipeline.measure_costs  rank 0 times F, B, W, F&B of every stage alone (the others wait),
//       then the summary sets the measured step time and bubble beside the simulator's
//       prediction, with a core per rank and with the ranks sharing this machine's cores.
// Rank 0 writes the run folder: config.resolved.yaml, metrics.jsonl, summary.json, and
// timeline_measured.svg / timeline_predicted.svg (the last step, as the chart draws them).
// Pipeline runs have no validation pass (no val loss).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "csrc/config/config.h"
#include "csrc/parallel/process_group.h"
#include "csrc/run/outcome.h"

namespace ts::parallel {

run::RunOutcome train_pipeline(const config::Config& cfg, const std::string& variant,
                               const std::filesystem::path& run_dir, bool resume);

// The schedule exists for world_size ranks and pipeline.microbatches, and its stages split
// model.n_layers. Throws config::InvalidKeys.
void check_pipeline_config(const config::Config& cfg, int world_size);

// The process's distributed state, joined on first use from torchrun's variables and
// cfg.dist / cfg.train.device, then shared by every variant of the run.
std::shared_ptr<Dist> process_dist(const config::Config& cfg);
// Leaves the job cleanly (the rank hosting the store waits for the others). Call once at
// the end of `tinyseek run`; a no-op when no variant joined.
void release_process_dist();
// This process's rank from RANK (0 without it): only rank 0 writes reports.
int launch_rank();

}  // namespace ts::parallel
