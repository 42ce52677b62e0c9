#include "csrc/train/hf.h"

#include <fmt/format.h>

#include <unistd.h>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include "csrc/nn/model_config.h"
#include "csrc/train/checkpoint.h"
#include "csrc/util/fs.h"

namespace ts::train {

namespace fs = std::filesystem;
using config::ConfigError;
using config::InvalidKeys;
using nlohmann::json;

namespace {

constexpr const char* kHfPrefix = "hf:";

bool is_mla(const config::ModelConfig& m) { return m.attention.kind == "mla"; }

double default_mla_scale(const config::AttentionConfig& a) {
  return 1.0 / std::sqrt(static_cast<double>(a.qk_nope_head_dim + a.qk_rope_head_dim));
}

// Rows of a [heads * d, in] projection from the pairs layout (x0, x1), (x2, x3), ... to
// rotate-half's (x0, x2, ...; x1, x3, ...), head by head: hf row r = tinyseek row perm[r].
std::vector<int64_t> rotate_half_rows(int64_t heads, int64_t d) {
  std::vector<int64_t> p(static_cast<size_t>(heads * d));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < d / 2; ++j) {
      p[static_cast<size_t>(h * d + j)] = h * d + 2 * j;
      p[static_cast<size_t>(h * d + d / 2 + j)] = h * d + 2 * j + 1;
    }
  return p;
}

// eh_proj's input columns: tinyseek concatenates [hnorm(h); enorm(e)], DeepSeek's checkpoint
// [enorm(e); hnorm(h)]: hf column c = tinyseek column perm[c].
std::vector<int64_t> swap_halves(int64_t d) {
  std::vector<int64_t> p(static_cast<size_t>(2 * d));
  for (int64_t j = 0; j < d; ++j) {
    p[static_cast<size_t>(j)] = d + j;
    p[static_cast<size_t>(d + j)] = j;
  }
  return p;
}

// The tensors of one transformer block: tinyseek prefix `ts` (blocks.L. or mtp.k.block.), hf
// prefix `hf` (model.layers.L.); `layer` decides dense or MoE as the model does.
void block_tensors(const config::Config& c, int64_t layer, const std::string& ts, const std::string& hf,
                   std::vector<HfTensor>& out) {
  const auto& m = c.model;
  const auto& a = m.attention;
  auto add = [&](const std::string& h, const std::string& t) { out.push_back({hf + h, ts + t}); };
  add("input_layernorm.weight", "attn_norm.weight");
  add("post_attention_layernorm.weight", "ffn_norm.weight");
  if (is_mla(m)) {
    if (a.q_lora_rank > 0) {
      add("self_attn.q_a_proj.weight", "attn.wq_a.weight");
      add("self_attn.q_a_layernorm.weight", "attn.q_norm.weight");
      add("self_attn.q_b_proj.weight", "attn.wq_b.weight");
    } else {
      add("self_attn.q_proj.weight", "attn.wq.weight");
    }
    add("self_attn.kv_a_proj_with_mqa.weight", "attn.wkv_a.weight");
    add("self_attn.kv_a_layernorm.weight", "attn.kv_norm.weight");
    add("self_attn.kv_b_proj.weight", "attn.wkv_b.weight");
    add("self_attn.o_proj.weight", "attn.wo.weight");
  } else {
    const int64_t hd = m.d_model / m.n_heads, kvh = nn::attention_kv_heads(m);
    out.push_back(
        {hf + "self_attn.q_proj.weight", ts + "attn.wq.weight", -1, 0, -1, 0, rotate_half_rows(m.n_heads, hd)});
    out.push_back({hf + "self_attn.k_proj.weight", ts + "attn.wk.weight", -1, 0, -1, 0, rotate_half_rows(kvh, hd)});
    add("self_attn.v_proj.weight", "attn.wv.weight");
    add("self_attn.o_proj.weight", "attn.wo.weight");
  }
  const bool moe = m.ffn == "moe" && layer >= m.moe.first_k_dense;
  if (!moe) {
    add("mlp.gate_proj.weight", "ffn.w1.weight");
    add("mlp.up_proj.weight", "ffn.w3.weight");
    add("mlp.down_proj.weight", "ffn.w2.weight");
    return;
  }
  const auto& e = m.moe;
  add("mlp.gate.weight", "ffn.router");
  if (e.loss_free)
    add("mlp.gate.e_score_correction_bias", "ffn.expert_bias");
  else
    out.push_back({hf + "mlp.gate.e_score_correction_bias", "", -1, 0, -1, -1, {}, false, true, {e.n_routed_experts}});
  const int64_t F = e.expert_hidden;
  for (int64_t i = 0; i < e.n_routed_experts; ++i) {
    const std::string x = fmt::format("mlp.experts.{}.", i);
    out.push_back({hf + x + "gate_proj.weight", ts + "ffn.w13.weight", i, 0, F});
    out.push_back({hf + x + "up_proj.weight", ts + "ffn.w13.weight", i, F, F});
    out.push_back({hf + x + "down_proj.weight", ts + "ffn.w2.weight", i});
  }
  if (e.n_shared_experts > 0) {
    add("mlp.shared_experts.gate_proj.weight", "ffn.shared.w1.weight");
    add("mlp.shared_experts.up_proj.weight", "ffn.shared.w3.weight");
    add("mlp.shared_experts.down_proj.weight", "ffn.shared.w2.weight");
  }
}

torch::Tensor hf_view(const HfTensor& t, const torch::Tensor& src) {
  torch::Tensor x = src;
  if (t.expert >= 0) x = x[t.expert];
  if (t.rows >= 0) x = x.narrow(0, t.begin, t.rows);
  return x;
}

torch::Tensor index_tensor(const std::vector<int64_t>& v) { return torch::tensor(v, torch::kInt64); }

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw ConfigError(p.string() + ": cannot read the file");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: not valid JSON ({})", p.string(), e.what()));
  }
}

std::string dump(const json& j) { return j.dump(2) + "\n"; }

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

std::vector<HfTensor> hf_tensor_map(const config::Config& c) {
  const auto& m = c.model;
  hf_architecture(c);  // throws when the model has no transformers form
  std::vector<HfTensor> out;
  out.push_back({"model.embed_tokens.weight", "embed.weight"});
  for (int64_t l = 0; l < m.n_layers; ++l)
    block_tensors(c, l, fmt::format("blocks.{}.", l), fmt::format("model.layers.{}.", l), out);
  out.push_back({"model.norm.weight", "norm.weight"});
  out.push_back({"lm_head.weight", "head.weight"});
  for (int64_t k = 0; k < m.mtp.depth; ++k) {
    const int64_t layer = m.n_layers + k;
    const std::string ts = fmt::format("mtp.{}.", k), hf = fmt::format("model.layers.{}.", layer);
    out.push_back({hf + "enorm.weight", ts + "enorm.weight"});
    out.push_back({hf + "hnorm.weight", ts + "hnorm.weight"});
    out.push_back({hf + "eh_proj.weight", ts + "eh_proj.weight", -1, 0, -1, 1, swap_halves(m.d_model)});
    block_tensors(c, layer, ts + "block.", hf, out);
    out.push_back({hf + "shared_head.norm.weight", ts + "norm.weight"});
    HfTensor emb{hf + "embed_tokens.weight", "embed.weight"}, head{hf + "shared_head.head.weight", "head.weight"};
    emb.copy = head.copy = true;
    out.push_back(emb);
    out.push_back(head);
  }
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> hf_state(nn::TransformerImpl& model, const config::Config& c) {
  std::map<std::string, torch::Tensor> own;
  for (const auto& p : model.named_parameters()) own[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) own[b.key()] = b.value();
  std::vector<std::pair<std::string, torch::Tensor>> out;
  torch::NoGradGuard ng;
  for (const auto& t : hf_tensor_map(c)) {
    torch::Tensor x;
    if (t.zeros) {
      x = torch::zeros(t.shape, torch::kFloat);
    } else {
      const auto it = own.find(t.ts);
      TORCH_CHECK(it != own.end(), "hf_state: the model has no tensor '", t.ts, "' (for ", t.hf, ")");
      x = hf_view(t, it->second.detach().to(torch::kCPU, torch::kFloat));
      if (t.perm_dim >= 0) x = x.index_select(t.perm_dim, index_tensor(t.perm));
    }
    out.emplace_back(t.hf, x.contiguous().clone());
  }
  return out;
}

void load_hf_state(nn::TransformerImpl& model, const config::Config& c,
                   const std::map<std::string, torch::Tensor>& tensors, const std::string& where) {
  std::map<std::string, torch::Tensor> own;
  for (const auto& p : model.named_parameters()) own[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) own[b.key()] = b.value();
  torch::NoGradGuard ng;
  std::set<std::string> names;
  for (const auto& [n, x] : tensors) names.insert(n);
  // MTP modules past the stored ones (a checkpoint without MTP, trained on with it) keep their
  // initialisation.
  const int64_t stored_depth = stored_mtp_depth(names, c.model.n_layers);
  for (const auto& t : hf_tensor_map(c)) {
    if (t.copy) continue;
    if (t.ts.starts_with("mtp.") && std::stoll(t.ts.substr(4)) >= stored_depth) continue;
    auto it = tensors.find(t.hf);
    if (it == tensors.end()) {
      // Tied embeddings: transformers saves no lm_head.
      if (t.hf == "lm_head.weight") it = tensors.find("model.embed_tokens.weight");
      if (it == tensors.end() && t.zeros) continue;  // no correction bias stored: zero
      if (it == tensors.end()) throw ConfigError(fmt::format("{}: tensor '{}' is missing", where, t.hf));
    }
    torch::Tensor src = it->second.to(torch::kCPU);
    if (t.zeros) {
      if (src.ne(0).any().item<bool>())
        throw ConfigError(
            fmt::format("{}: '{}' is not zero but model.moe.loss_free is false here (set it true to "
                        "keep the correction bias)",
                        where, t.hf));
      continue;
    }
    const auto dst_it = own.find(t.ts);
    TORCH_CHECK(dst_it != own.end(), "load_hf_state: the model has no tensor '", t.ts, "'");
    torch::Tensor dst = hf_view(t, dst_it->second);
    if (src.sizes() != dst.sizes())
      throw ConfigError(fmt::format("{}: '{}' has shape {}, expected {} (tinyseek's {})", where, t.hf,
                                    c10::str(src.sizes()), c10::str(dst.sizes()), t.ts));
    if (t.perm_dim >= 0) {
      // hf = ts.index_select(d, perm), so ts = hf.index_select(d, inverse(perm)).
      std::vector<int64_t> inv(t.perm.size());
      for (size_t i = 0; i < t.perm.size(); ++i) inv[static_cast<size_t>(t.perm[i])] = static_cast<int64_t>(i);
      src = src.index_select(t.perm_dim, index_tensor(inv));
    }
    dst.copy_(src.to(dst.scalar_type()));
  }
}

void export_hf(nn::TransformerImpl& model, const config::Config& c, const fs::path& out, const json& provenance) {
  json cfg = hf_config_json(c);  // throws (exit 2) before anything is written
  cfg["tinyseek"] = provenance;
  std::error_code ec;
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec)))
    throw ConfigError(fmt::format("--out {}: exists and is not an empty folder", out.string()));
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  if (ec)
    throw ConfigError(fmt::format("--out {}: cannot create {} ({})", out.string(), parent.string(), ec.message()));
  const fs::path tmp = parent / fmt::format(".{}.tmp.{}", out.filename().string(), ::getpid());
  util::remove_all(tmp);
  try {
    fs::create_directories(tmp);
    util::atomic_write(tmp / "config.json", dump(cfg));
    util::atomic_write(tmp / "model.safetensors", safetensors_serialize(hf_state(model, c), {{"format", "pt"}}));
    util::atomic_write(tmp / "generation_config.json",
                       dump({{"bos_token_id", nullptr},
                             {"eos_token_id", nullptr},
                             {"pad_token_id", nullptr},
                             {"do_sample", c.generate.temperature > 0},
                             {"temperature", c.generate.temperature > 0 ? c.generate.temperature : 1.0},
                             {"top_k", c.generate.top_k},
                             {"top_p", c.generate.top_p}}));
    util::atomic_write(tmp / "tokenizer.json", tokenizer_json(c.model.vocab_size).dump() + "\n");
    util::atomic_write(tmp / "tokenizer_config.json", dump({{"tokenizer_class", "PreTrainedTokenizerFast"},
                                                            {"model_max_length", nn::model_context(c)},
                                                            {"clean_up_tokenization_spaces", false},
                                                            {"add_bos_token", false},
                                                            {"add_eos_token", false}}));
    if (fs::exists(out, ec)) fs::remove(out);  // the empty folder
    fs::rename(tmp, out);
    util::fsync_path(parent, true);
  } catch (...) {
    util::remove_all(tmp);
    throw;
  }
}

bool is_hf_ref(const std::string& ref) { return ref.starts_with(kHfPrefix); }

fs::path hf_ref_path(const std::string& ref) { return ref.substr(std::string(kHfPrefix).size()); }

std::set<std::string> hf_tensor_names(const fs::path& dir) {
  const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  std::error_code ec;
  std::set<std::string> names;
  if (fs::is_regular_file(index, ec) && !fs::is_regular_file(single, ec)) {
    const json j = read_json(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw ConfigError(index.string() + ": 'weight_map' is missing");
    for (const auto& [name, file] : j["weight_map"].items()) names.insert(name);
    return names;
  }
  // The safetensors header alone: u64 length, then the JSON that names every tensor.
  std::ifstream in(single, std::ios::binary);
  if (!in)
    throw ConfigError(
        fmt::format("{}: holds neither model.safetensors nor model.safetensors.index.json", dir.string()));
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  if (!in || n > (100u << 20)) throw ConfigError(single.string() + ": not a safetensors file (bad header length)");
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  try {
    const json j = json::parse(header);  // a named object: items() must not outlive it
    for (const auto& [name, v] : j.items())
      if (name != "__metadata__") names.insert(name);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: not a safetensors file ({})", single.string(), e.what()));
  }
  return names;
}

int64_t stored_mtp_depth(const std::set<std::string>& names, int64_t n_layers) {
  int64_t depth = 0;
  while (names.contains(fmt::format("model.layers.{}.eh_proj.weight", n_layers + depth))) ++depth;
  return depth;
}

std::map<std::string, torch::Tensor> hf_load_tensors(const fs::path& dir) {
  const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  auto load = [&](const fs::path& p) {
    try {
      return safetensors_load(p);
    } catch (const ConfigError&) {
      throw;
    } catch (const std::exception& e) {
      throw ConfigError(fmt::format("{}: not a readable safetensors file ({})", p.string(), e.what()));
    }
  };
  std::error_code ec;
  if (fs::is_regular_file(single, ec)) return load(single);
  if (!fs::is_regular_file(index, ec))
    throw ConfigError(
        fmt::format("{}: holds neither model.safetensors nor model.safetensors.index.json", dir.string()));
  const json j = read_json(index);
  if (!j.contains("weight_map") || !j["weight_map"].is_object())
    throw ConfigError(index.string() + ": 'weight_map' is missing");
  std::set<std::string> files;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string())
      throw ConfigError(fmt::format("{}: weight_map['{}'] is not a file name", index.string(), name));
    const std::string f = file.get<std::string>();
    if (f.find('/') != std::string::npos || f == "..")
      throw ConfigError(
          fmt::format("{}: weight_map['{}'] = '{}' is not a file of this folder", index.string(), name, f));
    files.insert(f);
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& f : files) out.merge(load(dir / f));
  return out;
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

nn::Transformer hf_load_model(const fs::path& dir) {
  const config::Config c = hf_load_config(dir);
  nn::Transformer model(c);
  load_hf_state(*model, c, hf_load_tensors(dir), "hf:" + dir.string());
  return model;
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
