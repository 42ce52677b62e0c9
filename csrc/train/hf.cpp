// Hugging Face interop, the tensors and folders (csrc/train/hf.h); config.json and the tokenizer
// are in hf_config.cpp.
#include "csrc/train/hf.h"

#include <fmt/format.h>

#include <unistd.h>
#include <fstream>
#include <set>

#include "csrc/nn/model_config.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/hf_internal.h"
#include "csrc/util/fs.h"

namespace ts::train {

namespace fs = std::filesystem;
using config::ConfigError;
using hf_detail::is_mla;
using hf_detail::read_json;
using nlohmann::json;

namespace {

constexpr const char* kHfPrefix = "hf:";

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

std::string dump(const json& j) { return j.dump(2) + "\n"; }

}  // namespace

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
    util::atomic_write(tmp / "tokenizer.json", hf_detail::tokenizer_json(c.model.vocab_size).dump() + "\n");
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

}  // namespace ts::train
