// Data parallelism's gradient averaging over c10d (process_group.h), overlapped with the backward.
//
// Every rank trains on its share of the global batch; after the backward each gradient must be
// the mean of the ranks' gradients, so the step equals one process's step on the whole batch.
// GradSync hooks every parameter: when the backward delivers a parameter's gradient the hook
// copies it into its bucket (a flat buffer of about bucket_bytes, parameters in reverse order of
// registration, the order the backward reaches them), and a bucket whose parameters have all
// arrived is all-reduced at once, non-blocking, while the backward goes on with earlier layers
// (Gloo and NCCL run the reduction on their own threads). finish() launches what is left (the
// parameters that got no gradient count zero), waits, scales by `scale` and writes the means into
// .grad. Buckets are launched strictly in index order on every rank, since the backends pair the
// ranks' collectives by their order.
//
// Each parameter is averaged over its own group: the world for replicated parameters, the
// replicas of an expert shard for routed experts under expert parallelism (expert_parallel.h).
// torch's DistributedDataParallel does the same with its Reducer; it is a Python-facing class
// bound to ProcessGroup objects and autograd internals, where this works on the Backends Dist
// already holds and on the public tensor hook, in ~200 lines.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "csrc/parallel/process_group.h"

namespace ts::parallel {

struct SyncedParam {
  torch::Tensor param;
  const Group* group = nullptr;  // averaged over these ranks; nullptr: the world
};

struct GradSyncOptions {
  int64_t bucket_bytes = int64_t{1} << 20;  // per bucket (a parameter larger than this is a bucket alone)
  bool overlap = true;  // false: every bucket is reduced in finish(), after the backward (for the benchmark)
};

class GradSync {
 public:
  // `scale` multiplies the sums (1 / data-parallel ranks for a mean). The hooks stay registered
  // for the life of the params and do nothing unless armed by begin().
  GradSync(Dist& dist, std::vector<SyncedParam> params, double scale, GradSyncOptions options = {});

  void begin();   // before a backward
  void finish();  // after it: every gradient is the group's scaled sum

  struct Stats {
    int64_t buckets = 0;
    int64_t launched_in_backward = 0;  // buckets reduced while the backward was still running
    double wait_s = 0;                 // finish(): time spent waiting for the reductions
  };
  const Stats& last() const { return stats_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // of each param in flat
    const Group* group = nullptr;
    torch::Tensor flat;
    size_t arrived = 0;
    bool launched = false;
    c10::intrusive_ptr<c10d::Work> work;
  };
  void on_grad(size_t index, const torch::Tensor& grad);
  void launch(Bucket& b);
  void launch_ready_in_order();

  Dist& dist_;
  std::vector<SyncedParam> params_;
  std::vector<size_t> bucket_of_, slot_of_;  // per param
  std::vector<char> seen_;                   // per param: its gradient arrived in this backward
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;
  double scale_;
  GradSyncOptions options_;
  bool armed_ = false;
  Stats stats_;
};

// After the backward, in one all-reduce over `g` (default: the world): every tensor's gradient
// becomes `scale` times the sum of the ranks' (undefined gradients count zero). For gradients
// reduced as a whole after a step (a pipeline's copies of a stage), not overlapped with it.
void reduce_gradients(Dist& dist, const std::vector<torch::Tensor>& params, const Group* g, double scale = 1.0);

}  // namespace ts::parallel
