// Expert parallelism for the DeepSeekMoE layer (csrc/nn/moe.h) over c10d (process_group.h).
//
// The E routed experts are split evenly over the W ranks of an expert-parallel group: rank r
// owns experts [r*E_l, (r+1)*E_l), E_l = E/W. Every rank routes its own tokens; moe_permute
// already sorts the slots by global expert, hence by owner rank, so dispatch is one
// all_to_all_single of those rows. The owner reorders what it receives from (source rank,
// local expert) to (local expert, source rank) order, runs its experts as one grouped GEMM,
// restores the order and sends the rows back (combine); moe_unpermute then weights and sums them
// as without parallelism. Both exchanges are differentiable (the backward of an all-to-all is
// the all-to-all with the splits swapped), so gradients flow to the tokens' ranks and to the
// expert owners. Per layer and step: one small all-to-all of counts, then dispatch and combine.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "csrc/nn/moe.h"
#include "csrc/parallel/process_group.h"

namespace ts::parallel {

// Rows of x [sum(send_rows), ...] go to rank i in blocks of send_rows[i]; returns the rows
// received, [sum(recv_rows), ...], in source-rank order. Differentiable in x.
torch::Tensor all_to_all_rows(Dist& dist, const Group& group, const torch::Tensor& x,
                              const std::vector<int64_t>& send_rows, const std::vector<int64_t>& recv_rows);

// Keeps only this rank's experts in `moe` (its w13/w2 become [E_l, ...] slices of the full
// tensors, so a model initialized identically on every rank shards consistently) and installs
// the dispatch/combine runner. `dist` and `group` must outlive the layer's use. Throws
// config::ConfigError when E is not divisible by the group size.
void shard_experts(nn::MoEImpl& moe, Dist& dist, const Group& group);

// Sums the step loads of `layers` over the ranks of `g` (default: the world) in one all-reduce,
// so every copy updates its loss-free bias from the load all of them saw. Every rank of `g` passes
// the same layers in the same order; a layer without a load this step counts zeros.
void sum_step_loads(Dist& dist, const std::vector<std::shared_ptr<nn::MoEImpl>>& layers, const Group* g);

}  // namespace ts::parallel
