// Token data for training: the embedded synthetic corpus, a task's worked examples (data.source:
// task, csrc/rl/tasks.h), a UTF-8 text file as bytes, or pre-tokenized uint16
// shards; and deterministic batches that depend only on (seed, step).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/config/config.h"

namespace ts::train {

struct TokenData {
  std::vector<uint16_t> train;  // token ids
  std::vector<uint16_t> val;
  std::string description;     // one line: source, sizes
  int64_t max_token = 0;       // the largest id present (must be < vocab_size)
  double unigram_entropy = 0;  // nats per token over the training split
};

// The built-in corpus: deterministic in (bytes, seed), with structure at several scales (see data.cpp).
std::string synthetic_corpus(int64_t bytes, uint64_t seed);

// The checks that need no reading (cfg.data, and cfg.task for a task corpus): a path for text and
// shards that exists and is a regular file (or, for shards, a folder), never a device or pipe; a
// synthetic or task corpus large enough for the splits. Throws config::InvalidKeys.
void check_data_config(const config::Config& cfg);

// Loads what `cfg` names (check_data_config first); throws config::ConfigError for a missing,
// empty or unreadable source.
TokenData load_data(const config::Config& cfg);

// Shannon entropy of the token histogram, in nats.
double unigram_entropy(const std::vector<uint16_t>& tokens);

struct Batch {
  at::Tensor inputs;   // [B, T] int64
  at::Tensor targets;  // [B, T] int64 (inputs shifted by one)
};

// Training batch for `step`: B windows at offsets drawn from a generator seeded by (seed, step),
// so a resumed run sees exactly the batches an uninterrupted one would.
Batch train_batch(const std::vector<uint16_t>& tokens, int64_t batch, int64_t seq_len, uint64_t seed, int64_t step);

// Validation batch i of a fixed, evenly spaced set of windows.
Batch val_batch(const std::vector<uint16_t>& tokens, int64_t batch, int64_t seq_len, int64_t i, int64_t n_batches);

}  // namespace ts::train
