// DeepSeekMoE feed-forward (model.ffn: moe): shared experts that every token uses plus fine-grained
// routed experts, top-K per token, all SwiGLU. Routed experts run through the ops
// moe_permute -> grouped_gemm (gate/up) -> SwiGLU -> grouped_gemm (down) -> moe_unpermute, so each
// expert's rows are one contiguous segment (no per-expert loop, no padding). Balancing by config:
// expert-level and sequence-wise auxiliary losses, and the auxiliary-loss-free bias.
//
// Dimensions: B sequences of S tokens, T = B*S, C model width, E routed experts, K = top_k,
// F = expert_hidden, M = T*K routed rows.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "csrc/config/config.h"
#include "csrc/nn/layers.h"

namespace ts::nn {

// E independent linear maps in one tensor: rows of expert e times weight[e]^T (grouped_gemm).
// Computes in fp32 on CPU; on CUDA in the activations' dtype (bf16 under autocast).
class GroupedLinearImpl : public torch::nn::Module {
 public:
  GroupedLinearImpl(int64_t experts, int64_t in_features, int64_t out_features);
  // x_sorted [M, in], expert_offsets [E + 1] -> [M, out]
  torch::Tensor forward(const torch::Tensor& x_sorted, const torch::Tensor& expert_offsets);
  torch::Tensor weight;  // [E, out, in]
};
TORCH_MODULE(GroupedLinear);

class MoEImpl : public torch::nn::Module {
 public:
  explicit MoEImpl(const config::Config& cfg);
  torch::Tensor forward(const torch::Tensor& x);  // [B, S, C] (or [T, C]) -> same shape

  // The balance losses of the last forward in training mode with gradients on (their sum);
  // undefined when no auxiliary loss is configured.
  torch::Tensor aux_loss() const { return aux_loss_; }

  // Auxiliary-loss-free balancing (moe.loss_free): b_i += bias_update_speed * sign(mean load -
  // load_i) over the training forwards since the last call. The trainer calls it after each
  // optimizer step. No-op otherwise.
  void update_bias();
  // The load update_bias() will use: [E] int64 slots of the training forwards since the last
  // update (undefined when none). Processes that each saw part of a batch (DualPipe's two copies
  // of a stage) sum theirs with set_step_load first; set_step_load({}) forgets the forwards.
  const torch::Tensor& step_load() const { return step_load_; }
  void set_step_load(torch::Tensor load) { step_load_ = std::move(load); }

  struct Load {
    torch::Tensor tokens;  // [E] int64 slots routed to each expert (before any capacity drop)
    int64_t dropped = 0;   // slots dropped by moe.capacity_factor (0 when dropless)
  };
  // What was routed since the previous call (every forward, training or eval), then reset.
  Load take_load();

  const config::MoeConfig& config() const { return cfg_; }

  // The routed experts this layer holds, on rows sorted by expert: xs [rows, C], offsets
  // [experts held + 1] -> [rows, C] = w2(SwiGLU(w13 xs)) per expert segment.
  torch::Tensor local_experts(const torch::Tensor& xs, const torch::Tensor& offsets);
  // How the routed experts run on the permuted rows (xs [M, C], offsets [E + 1] over all E
  // experts) -> [M, C]. Default: local_experts. Expert parallelism (csrc/parallel/
  // expert_parallel.h) installs a runner that ships rows to the ranks owning their experts.
  using ExpertRunner = std::function<torch::Tensor(const torch::Tensor& xs, const torch::Tensor& offsets)>;
  void set_expert_runner(ExpertRunner runner) { runner_ = std::move(runner); }

  torch::Tensor router;        // [E, C] fp32 gate (kept in fp32 in every precision)
  torch::Tensor expert_bias;   // [E] buffer "expert_bias", loss_free only (checkpointed, not trained)
  GroupedLinear w13{nullptr};  // [E, 2F, C]: gate (first F rows) and up projections
  GroupedLinear w2{nullptr};   // [E, C, F]: down projection
  SwiGLU shared{nullptr};      // the n_shared_experts as one SwiGLU of width n_shared * F; may be null

 private:
  config::MoeConfig cfg_;
  torch::Tensor aux_loss_;
  torch::Tensor load_, dropped_;  // since take_load()
  torch::Tensor step_load_;       // training forwards since update_bias()
  ExpertRunner runner_;
};
TORCH_MODULE(MoE);

// Returns h (the same values) and makes any backward through the result also send gradient `scale`
// into `aux`, a scalar with a graph (undefined aux: h itself). A pipeline stage attaches its MoE
// balance losses to its output this way, so the stage's backward includes them whatever its root
// (Megatron-Core's MoEAuxLossAutoScaler does the same).
torch::Tensor attach_aux_loss(const torch::Tensor& h, const torch::Tensor& aux, double scale);

// Load statistics of `layers` since the last call (each layer's take_load()). Empty for no layers;
// otherwise {key: MaxVio averaged over layers, key + "_layers": [MaxVio per layer],
// "dropped_tokens": total, and with with_load "expert_load": [[tokens per expert] per layer]}.
nlohmann::json take_moe_stats(const std::vector<std::shared_ptr<MoEImpl>>& layers, const std::string& key,
                              bool with_load);

}  // namespace ts::nn
