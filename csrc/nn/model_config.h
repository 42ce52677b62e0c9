// The checks across fields of the model a config describes, in one place. Every experiment kind
// runs them for every variant before anything is written (run/kinds.h), and the modules' own
// constructors run them too, so a model built from a config directly fails the same way.
#pragma once

#include "csrc/config/config.h"

namespace ts::nn {

// Throws config::InvalidKeys naming the keys: attention shapes (heads dividing d_model, even
// rotary widths, GQA groups), MoE routing shapes (groups, top-k), the precision knobs.
void check_model_config(const config::Config& c);

// The generation limits (generate.*) against the model: max_new_tokens leaves room for a prompt
// in the context, top_k within the vocabulary, cache blocks of a multiple of 16 rows.
void check_generate_config(const config::Config& c);

// The MoE part alone (a MoE layer can be built without a transformer).
void validate_moe_config(const config::MoeConfig& c);

// The precision knobs alone (every ts::nn::Linear checks them).
void check_precision_config(const config::PrecisionConfig& p);

// Key/value heads of the MHA family (attention.kind mha, gqa or mqa): n_heads for MHA, 1 for MQA,
// attention.n_kv_heads for GQA (0: n_heads). make_attention and the cost model both use it.
int64_t attention_kv_heads(const config::ModelConfig& m);

// The longest sequence the model is trained for and may decode: data.seq_len (the rotary
// tables of training cover it; positions past it were never seen).
int64_t model_context(const config::Config& c);

}  // namespace ts::nn
