// Pieces the two files of Hugging Face interop share (hf.cpp: tensors and folders; hf_config.cpp:
// config.json and the tokenizer). Not part of the interface: csrc/train/hf.h is.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>

#include "csrc/config/config.h"

namespace ts::train::hf_detail {

inline bool is_mla(const config::ModelConfig& m) { return m.attention.kind == "mla"; }

// A JSON file; config::ConfigError naming it when it cannot be read or parsed.
nlohmann::json read_json(const std::filesystem::path& p);

// A byte-level tokenizer transformers loads offline (tokenizers' tokenizer.json format).
nlohmann::json tokenizer_json(int64_t vocab);

}  // namespace ts::train::hf_detail
