// What a model costs, counted from the shapes its config describes (no model is built): its
// parameters, what one token activates, its KV cache, and the FLOPs of a training step per token.
//
// FLOPs are those of the matrix products, 2 m n k each: every projection, the gate, the routed
// experts a token actually reaches (top_k of them: the MoE layers are dropless unless
// moe.capacity_factor > 0, which this count ignores), the shared experts, the attention core (the
// score and the value products over the positions a causal query sees, (T + 1) / 2 on average
// over a sequence of T) and the output head; the MTP modules over the T - k positions depth k
// predicts. Element-wise work (norms, RoPE, softmax, SwiGLU's product, the optimizer) is left out:
// at these shapes it is a few percent of the products. A training step costs 3 forward passes
// (the backward pass computes two products for every product of the forward), so this is the
// count a 6N estimate approximates, with attention and routing counted as they are.
//
// MLA trains as V3 does, through the decompressed keys and values (the absorbed form is for
// decoding), and is counted that way.
#pragma once

#include <cstdint>

#include "csrc/config/config.h"

namespace ts::nn {

struct ModelCost {
  int64_t total_parameters = 0;            // the main model: embedding, blocks, final norm, head
  int64_t active_parameters = 0;           // total minus the routed experts one token does not use
  int64_t mtp_parameters = 0;              // the MTP modules (trained, not used by plain decoding)
  int64_t kv_values_per_token = 0;         // cached values per token, all layers
  double forward_flops_per_token = 0;      // main model, at the training length data.seq_len
  double mtp_forward_flops_per_token = 0;  // the MTP modules, per main-model token
  double train_flops_per_token = 0;        // 3 * (forward + mtp forward)
};

ModelCost model_cost(const config::Config& c);

// Matrix-product FLOPs of one decoding step for one sequence that already holds `context` tokens
// (the new token attends to context + 1), main model only, absorbed MLA as it decodes.
double decode_flops_per_token(const config::Config& c, int64_t context);

}  // namespace ts::nn
