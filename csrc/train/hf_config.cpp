// The config.json side of Hugging Face interop (csrc/train/hf.h): which architecture a model is
// written as, its config.json, the model a config.json describes, and the byte-level tokenizer.
#include <fmt/format.h>

#include <cmath>
#include <fstream>

#include "csrc/nn/model_config.h"
#include "csrc/train/hf.h"
#include "csrc/train/hf_internal.h"

namespace ts::train {

namespace fs = std::filesystem;
using config::ConfigError;
using config::InvalidKeys;
using hf_detail::is_mla;
using nlohmann::json;

namespace hf_detail {

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw ConfigError(p.string() + ": cannot read the file");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: not valid JSON ({})", p.string(), e.what()));
  }
}

// A byte-level tokenizer transformers loads offline (tokenizers' JSON format): token id b is byte
// b, spelled as GPT-2's printable stand-in for that byte (the ByteLevel pre-tokenizer and decoder
// map bytes to those characters and back); ids past 255 are special tokens <|id_N|>.
json tokenizer_json(int64_t vocab) {
  // GPT-2's byte -> character table: printable Latin-1 bytes stand for themselves, the others are
  // shifted to code points 256 and up.
  std::vector<int> printable;
  for (int b = '!'; b <= '~'; ++b) printable.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) printable.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) printable.push_back(b);
  std::vector<int> cp(256, -1);
  for (int b : printable) cp[static_cast<size_t>(b)] = b;
  int next = 256;
  for (int b = 0; b < 256; ++b)
    if (cp[static_cast<size_t>(b)] < 0) cp[static_cast<size_t>(b)] = next++;
  auto utf8 = [](int c) {
    std::string s;
    if (c < 0x80) {
      s += static_cast<char>(c);
    } else if (c < 0x800) {
      s += static_cast<char>(0xC0 | (c >> 6));
      s += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      s += static_cast<char>(0xE0 | (c >> 12));
      s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (c & 0x3F));
    }
    return s;
  };
  json vocab_map = json::object();
  for (int b = 0; b < 256 && b < vocab; ++b) vocab_map[utf8(cp[static_cast<size_t>(b)])] = b;
  json added = json::array();
  for (int64_t id = 256; id < vocab; ++id) {
    const std::string name = fmt::format("<|id_{}|>", id);
    vocab_map[name] = id;
    added.push_back({{"id", id},
                     {"content", name},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level},
          {"post_processor", nullptr},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab_map},
            {"merges", json::array()}}}};
}

}  // namespace hf_detail

namespace {

using hf_detail::read_json;

double default_mla_scale(const config::AttentionConfig& a) {
  return 1.0 / std::sqrt(static_cast<double>(a.qk_nope_head_dim + a.qk_rope_head_dim));
}

// config.json's `key` as T (int64_t or double), or `fallback` when it is missing or null.
template <class T>
T get(const json& j, const char* key, const fs::path& file, std::optional<T> fallback = {}) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    throw ConfigError(fmt::format("{}: '{}' is missing", file.string(), key));
  }
  const bool ok = std::is_integral_v<T> ? j[key].is_number_integer() : j[key].is_number();
  if (!ok)
    throw ConfigError(fmt::format("{}: '{}' must be {}, got {}", file.string(), key,
                                  std::is_integral_v<T> ? "an integer" : "a number", j[key].dump()));
  return j[key].get<T>();
}
int64_t get_int(const json& j, const char* key, const fs::path& file, std::optional<int64_t> fallback = {}) {
  return get<int64_t>(j, key, file, fallback);
}
double get_num(const json& j, const char* key, const fs::path& file, std::optional<double> fallback = {}) {
  return get<double>(j, key, file, fallback);
}

void expect(bool ok, const fs::path& file, const std::string& what) {
  if (!ok) throw ConfigError(fmt::format("{}: {} (tinyseek cannot represent this model)", file.string(), what));
}

// The rope_theta of a config.json: rope_parameters (transformers 5) or the older top-level keys;
// only the plain (default) rotary embedding maps onto tinyseek's.
double rope_theta(const json& j, const fs::path& file) {
  json rp = j.contains("rope_parameters") && j["rope_parameters"].is_object() ? j["rope_parameters"] : json::object();
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object())
    for (const auto& [k, v] : j["rope_scaling"].items()) rp[k] = v;
  const std::string type = rp.value("rope_type", rp.value("type", std::string("default")));
  expect(type == "default", file, fmt::format("rope_parameters.rope_type is '{}', expected 'default'", type));
  if (rp.contains("rope_theta")) return get_num(rp, "rope_theta", file);
  return get_num(j, "rope_theta", file, 10000.0);
}

}  // namespace

std::string hf_architecture(const config::Config& c) {
  const auto& m = c.model;
  if (is_mla(m)) {
    const auto& a = m.attention;
    if (a.softmax_scale > 0 && std::abs(a.softmax_scale - default_mla_scale(a)) > 1e-12 * default_mla_scale(a))
      throw InvalidKeys({"model.attention.softmax_scale"},
                        fmt::format("{} cannot be exported: transformers' DeepSeek-V3 scales by "
                                    "1/sqrt(qk_nope_head_dim + qk_rope_head_dim) = {} (set 0)",
                                    a.softmax_scale, default_mla_scale(a)));
    if (m.ffn == "moe") {
      const auto& e = m.moe;
      if (e.score_func != "sigmoid")
        throw InvalidKeys(
            {"model.moe.score_func"},
            fmt::format("'{}' cannot be exported: transformers' DeepSeek-V3 gate scores with a sigmoid", e.score_func));
      if (e.capacity_factor > 0)
        throw InvalidKeys(
            {"model.moe.capacity_factor"},
            fmt::format("{} cannot be exported: transformers' DeepSeek-V3 drops no tokens (set 0)", e.capacity_factor));
      if (e.n_group > 1 && e.n_routed_experts / e.n_group < 2)
        throw InvalidKeys({"model.moe.n_group"},
                          fmt::format("{} groups of {} expert(s) cannot be exported: transformers' DeepSeek-V3 "
                                      "scores a group by its best two experts",
                                      e.n_group, e.n_routed_experts / std::max<int64_t>(e.n_group, 1)));
    }
    return "deepseek_v3";
  }
  if (m.ffn == "moe")
    throw InvalidKeys({"model.ffn", "model.attention.kind"},
                      fmt::format("a mixture of experts with attention '{}' cannot be exported: tinyseek exports "
                                  "MoE models as DeepSeek-V3, which needs attention.kind: mla",
                                  m.attention.kind));
  return "llama";
}

json hf_config_json(const config::Config& c) {
  const auto& m = c.model;
  const std::string arch = hf_architecture(c);
  json j;
  if (arch == "deepseek_v3") {
    const auto& a = m.attention;
    const auto& e = m.moe;
    j = {{"architectures", {"DeepseekV3ForCausalLM"}},
         {"model_type", "deepseek_v3"},
         {"num_key_value_heads", m.n_heads},
         {"q_lora_rank", a.q_lora_rank > 0 ? json(a.q_lora_rank) : json(nullptr)},
         {"kv_lora_rank", a.kv_lora_rank},
         {"qk_nope_head_dim", a.qk_nope_head_dim},
         {"qk_rope_head_dim", a.qk_rope_head_dim},
         {"v_head_dim", a.v_head_dim},
         {"rope_interleave", true},
         {"moe_intermediate_size", e.expert_hidden},
         {"n_routed_experts", e.n_routed_experts},
         {"n_shared_experts", e.n_shared_experts},
         {"num_experts_per_tok", e.top_k},
         {"n_group", e.n_group},
         {"topk_group", e.topk_group},
         {"routed_scaling_factor", e.routed_scaling_factor},
         // tinyseek's sigmoid gate always renormalises the top-k weights (V3 §2.1.2).
         {"norm_topk_prob", true},
         {"scoring_func", "sigmoid"},
         {"topk_method", "noaux_tc"},
         {"first_k_dense_replace", m.ffn == "moe" ? std::min(e.first_k_dense, m.n_layers) : m.n_layers},
         // DeepSeek's name and transformers' for the MTP depth (transformers builds no MTP layer).
         {"num_nextn_predict_layers", m.mtp.depth},
         {"num_mtp_layers", m.mtp.depth}};
  } else {
    j = {{"architectures", {"LlamaForCausalLM"}},
         {"model_type", "llama"},
         {"num_key_value_heads", nn::attention_kv_heads(m)},
         {"head_dim", m.d_model / m.n_heads},
         {"mlp_bias", false}};
  }
  j.update({{"vocab_size", m.vocab_size},
            {"hidden_size", m.d_model},
            {"intermediate_size", m.ffn_hidden},
            {"num_hidden_layers", m.n_layers},
            {"num_attention_heads", m.n_heads},
            {"hidden_act", "silu"},
            {"max_position_embeddings", nn::model_context(c)},
            {"initializer_range", m.init_std},
            {"rms_norm_eps", m.norm_eps},
            {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", m.rope_theta}}},
            {"attention_bias", false},
            {"attention_dropout", 0.0},
            {"tie_word_embeddings", false},
            {"use_cache", true},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr},
            {"pad_token_id", nullptr},
            {"dtype", "float32"}});
  return j;
}

config::Config hf_load_config(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw ConfigError(fmt::format("hf:{}: no such folder", dir.string()));
  const fs::path file = dir / "config.json";
  const json j = read_json(file);
  const std::string type = j.value("model_type", std::string());
  expect(type == "deepseek_v3" || type == "llama", file,
         fmt::format("model_type is '{}', expected 'deepseek_v3' or 'llama'", type));
  config::Config c;
  c.name = "hf";
  auto& m = c.model;
  m.vocab_size = get_int(j, "vocab_size", file);
  m.d_model = get_int(j, "hidden_size", file);
  m.n_layers = get_int(j, "num_hidden_layers", file);
  m.n_heads = get_int(j, "num_attention_heads", file);
  m.ffn_hidden = get_int(j, "intermediate_size", file);
  m.norm_eps = get_num(j, "rms_norm_eps", file, 1e-6);
  m.init_std = get_num(j, "initializer_range", file, 0.02);
  m.rope_theta = rope_theta(j, file);
  expect(j.value("hidden_act", std::string("silu")) == "silu", file, "hidden_act is not 'silu'");
  expect(!j.value("attention_bias", false), file, "attention_bias is true");
  expect(!j.value("mlp_bias", false), file, "mlp_bias is true");
  // Rotary tables cover the trained context; very long ones are capped (decoding never gets there).
  c.data.seq_len = std::min<int64_t>(get_int(j, "max_position_embeddings", file, 4096), 1 << 16);
  const int64_t kv_heads = get_int(j, "num_key_value_heads", file, m.n_heads);
  if (type == "llama") {
    expect(get_int(j, "head_dim", file, m.d_model / m.n_heads) * m.n_heads == m.d_model, file,
           "head_dim * num_attention_heads != hidden_size");
    m.attention.kind = kv_heads == m.n_heads ? "mha" : kv_heads == 1 ? "mqa" : "gqa";
    m.attention.n_kv_heads = m.attention.kind == "gqa" ? kv_heads : 0;
    m.ffn = "dense";
  } else {
    auto& a = m.attention;
    expect(kv_heads == m.n_heads, file, "num_key_value_heads differs from num_attention_heads (MLA has one per head)");
    expect(j.value("rope_interleave", true), file, "rope_interleave is false (tinyseek rotates interleaved pairs)");
    a.kind = "mla";
    a.q_lora_rank = get_int(j, "q_lora_rank", file, 0);
    a.kv_lora_rank = get_int(j, "kv_lora_rank", file);
    a.qk_nope_head_dim = get_int(j, "qk_nope_head_dim", file);
    a.qk_rope_head_dim = get_int(j, "qk_rope_head_dim", file);
    a.v_head_dim = get_int(j, "v_head_dim", file);
    auto& e = m.moe;
    const int64_t first_dense = get_int(j, "first_k_dense_replace", file, 0);
    m.ffn = first_dense < m.n_layers ? "moe" : "dense";
    e.first_k_dense = m.ffn == "moe" ? first_dense : 0;
    e.n_routed_experts = get_int(j, "n_routed_experts", file);
    e.n_shared_experts = get_int(j, "n_shared_experts", file, 0);
    e.top_k = get_int(j, "num_experts_per_tok", file);
    e.expert_hidden = get_int(j, "moe_intermediate_size", file);
    e.n_group = get_int(j, "n_group", file, 1);
    e.topk_group = get_int(j, "topk_group", file, 1);
    e.routed_scaling_factor = get_num(j, "routed_scaling_factor", file, 1.0);
    e.score_func = "sigmoid";
    e.loss_free = true;  // the correction bias is kept (and trained on, if this model is trained)
    expect(j.value("scoring_func", std::string("sigmoid")) == "sigmoid", file, "scoring_func is not 'sigmoid'");
    if (m.ffn == "moe")
      expect(j.value("norm_topk_prob", true), file,
             "norm_topk_prob is false (tinyseek's sigmoid gate renormalises the top-k weights)");
  }
  // The MTP depth: the MTP layers stored after the main ones (transformers' own checkpoints have none).
  m.mtp.depth = stored_mtp_depth(hf_tensor_names(dir), m.n_layers);
  try {
    nn::check_model_config(c);
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}", file.string(), e.what()));
  }
  return c;
}

std::vector<std::string> model_differences(const config::ModelConfig& a, const config::ModelConfig& b) {
  config::Config ca, cb;
  ca.model = a;
  cb.model = b;
  const auto fa = config::flat_values(ca), fb = config::flat_values(cb);
  // Keys that change neither the tensors nor the function the weights compute: training knobs
  // (balance losses, bias speed, initialisation, MTP loss weights), the MoE section of a dense
  // model, the MLA dimensions of the MHA family and the reverse. The MTP depth may grow: new
  // modules start from their initialisation.
  const bool moe = a.ffn == "moe" || b.ffn == "moe", mla = a.attention.kind == "mla" || b.attention.kind == "mla";
  auto irrelevant = [&](const std::string& k) {
    for (const char* p : {"model.init_std", "model.moe.aux_loss_alpha", "model.moe.seq_aux_loss_alpha",
                          "model.moe.loss_free", "model.moe.bias_update_speed", "model.mtp."})
      if (k.starts_with(p)) return true;
    if (!moe && k.starts_with("model.moe.")) return true;
    if (mla && k == "model.attention.n_kv_heads") return true;
    if (!mla && k.starts_with("model.attention.") && k != "model.attention.kind" && k != "model.attention.n_kv_heads")
      return true;
    return false;
  };
  std::vector<std::string> out;
  for (const auto& [k, v] : fa)
    if (k.starts_with("model.") && !irrelevant(k) && fb.at(k) != v)
      out.push_back(fmt::format("{}: {} vs {}", k, v, fb.at(k)));
  return out;
}

}  // namespace ts::train
