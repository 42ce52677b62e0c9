// Hugging Face interop: tinyseek's transformer as a transformers checkpoint folder and back.
//
// An MLA model is written as DeepSeek-V3 (`model_type: deepseek_v3`, DeepseekV3ForCausalLM): the
// parameter names of transformers, interleaved RoPE (`rope_interleave: true`, the pairs layout
// tinyseek rotates in), sigmoid scoring with group-limited top-k and the e_score_correction_bias,
// routed experts one by one (experts.{i}.gate_proj/up_proj/down_proj, the layout of DeepSeek's
// released checkpoint and of transformers' save_pretrained), dense layers via
// first_k_dense_replace, and the MTP modules as layers num_hidden_layers + k - 1 (enorm, hnorm,
// eh_proj over [enorm(embedding); hnorm(hidden)], the block, shared_head.norm, and copies of the
// shared embedding and head), which transformers ignores. A dense model of the MHA family (MHA,
// GQA, MQA) is written as Llama (LlamaForCausalLM), its query and key rows permuted from the pairs
// layout to transformers' rotate-half layout. The same table of names (hf_tensor_map) serves
// both directions, so an export after an import gives the same tensors bit for bit.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "csrc/config/config.h"
#include "csrc/nn/transformer.h"

namespace ts::train {

// "deepseek_v3" or "llama": the transformers architecture config `c`'s model is written as.
// Throws config::InvalidKeys naming the key when transformers cannot represent the model (a
// softmax gate, capacity_factor > 0, a non-default softmax_scale, MoE without MLA, ...).
std::string hf_architecture(const config::Config& c);

// config.json of the exported model: every field derived from c.model (and data.seq_len as
// max_position_embeddings).
nlohmann::json hf_config_json(const config::Config& c);

// One tensor of the transformers checkpoint and where its values live in tinyseek's model:
// hf = ts[expert] rows [begin, begin + rows), then index_select(perm_dim, perm) when perm is set.
struct HfTensor {
  std::string hf;         // e.g. model.layers.0.self_attn.q_a_proj.weight
  std::string ts;         // tinyseek's parameter or buffer, e.g. blocks.0.attn.wq_a.weight
  int64_t expert = -1;    // >= 0: slice [expert] of a grouped expert weight [E, out, in]
  int64_t begin = 0;      // first row (dim 0, after the expert slice)
  int64_t rows = -1;      // -1: all
  int64_t perm_dim = -1;  // the dimension perm reorders (-1: none)
  std::vector<int64_t> perm;
  bool copy = false;           // a stored copy of a shared tensor (the MTP layers' embedding and head)
  bool zeros = false;          // tinyseek has no such tensor; exported as zeros (a bias without loss-free balancing)
  std::vector<int64_t> shape;  // the hf tensor's shape (for zeros)
};
std::vector<HfTensor> hf_tensor_map(const config::Config& c);

// The model's tensors under transformers' names, fp32, on CPU, in the map's order.
std::vector<std::pair<std::string, torch::Tensor>> hf_state(nn::TransformerImpl& model, const config::Config& c);

// Copies transformers-named tensors into the model (converted to the model's dtype). Throws
// config::ConfigError naming `where` and the tensor when one is missing, has another shape, or
// cannot be represented (a non-zero correction bias in a model without model.moe.loss_free).
void load_hf_state(nn::TransformerImpl& model, const config::Config& c,
                   const std::map<std::string, torch::Tensor>& tensors, const std::string& where);

// Writes the folder `out` (which must not exist or be empty): config.json, model.safetensors,
// generation_config.json, and a byte-level tokenizer (tokenizer.json, tokenizer_config.json) that
// transformers loads offline. Built beside `out` and renamed into place: no half folder.
// `provenance` goes into config.json as "tinyseek" (run, step).
void export_hf(nn::TransformerImpl& model, const config::Config& c, const std::filesystem::path& out,
               const nlohmann::json& provenance);

// hf:DIR, the prefix a model reference carries to name a transformers checkpoint folder.
bool is_hf_ref(const std::string& ref);
std::filesystem::path hf_ref_path(const std::string& ref);  // DIR of hf:DIR

// A config whose model section (and data.seq_len) describes the checkpoint in DIR, from its
// config.json and tensor names (the MTP depth is the number of MTP layers stored). Throws
// config::ConfigError naming DIR/config.json and the key tinyseek cannot represent.
config::Config hf_load_config(const std::filesystem::path& dir);

// The tensors of DIR: model.safetensors, or the shards model.safetensors.index.json lists.
std::map<std::string, torch::Tensor> hf_load_tensors(const std::filesystem::path& dir);

// The tensor names of DIR (from the safetensors header or the shard index; no data is read), and
// the MTP layers among them (model.layers.{n_layers + k}.eh_proj.weight for k = 0, 1, ...).
std::set<std::string> hf_tensor_names(const std::filesystem::path& dir);
int64_t stored_mtp_depth(const std::set<std::string>& names, int64_t n_layers);

// The keys of model sections `a` and `b` whose values differ, as "model.key: a vs b" lines
// (init_from checks that the configured model is the one the checkpoint holds).
std::vector<std::string> model_differences(const config::ModelConfig& a, const config::ModelConfig& b);

}  // namespace ts::train
