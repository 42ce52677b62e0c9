// Measures the simulator's costs (F, B, W, F&B; simulator.h) of each pipeline stage of the
// transformer on this process, one unit at a time, so a real run can be set beside the
// simulator's prediction from measured numbers.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "csrc/nn/transformer.h"
#include "csrc/parallel/executor.h"
#include "csrc/parallel/simulator.h"

namespace ts::parallel {

struct StageCosts {
  int stage = 0;
  Costs costs;    // seconds: median over repeats
  double BW = 0;  // fused full backward (1F1B's and DualPipe's BW), seconds
};

// For each stage: `repeats` timed runs after one warm-up of a forward (F), the input half of
// its backward (B), the weight half (W), the fused backward (BW) and a forward overlapped
// with another unit's fused backward (FB, interleaved on one thread as the executor runs
// it). Micro-batches are `tokens`/`targets` [b, T]; inner stages get random activations of
// the embedding's width. Leaves no gradient behind.
std::vector<StageCosts> measure_stage_costs(nn::Transformer& model, const std::vector<StageRange>& stages,
                                            const at::Tensor& tokens, const at::Tensor& targets, int repeats);

// The mean over stages (the simulator takes one cost per kind).
Costs mean_costs(const std::vector<StageCosts>& per_stage);

}  // namespace ts::parallel
