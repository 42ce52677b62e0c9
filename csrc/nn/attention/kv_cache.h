// Paged KV cache for incremental decoding, one object for every attention kind.
//
// Each layer holds the planes its attention kind caches, each a pool [NB, BS, heads, dim]:
//   MHA / GQA / MQA: two planes, K and V, heads = n_kv_heads (n_h, n_g or 1), dim = d_h;
//   MLA:             one plane [c_KV ; k_R], heads = 1, dim = d_c + d_R (FlashMLA's layout,
//                    read directly by torch.ops.tinyseek.mla_decode).
// Position p of sequence b lives in row p % BS of block block_table[b][p / BS]. Every sequence
// owns MB = ceil(max_tokens / BS) blocks, handed out in order (b * MB + i) or, for tests of
// the paging, in a random permutation.
//
// A decode step: begin_step(n_new) (sequence b appends n_new[b] tokens; the model's inputs are
// [B, S] with S >= max n_new, the rest of each row padding), every layer write()s its planes for
// the step and reads them back, then end_step() commits the new lengths.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "csrc/nn/layers.h"

namespace ts::nn {

// One cached tensor per token and layer: heads x dim values.
struct CachePlane {
  int64_t heads, dim;
};

class KVCache {
 public:
  // planes: what one layer caches (AttentionImpl::cache_planes()); opts: dtype and device of the pools.
  KVCache(int64_t n_layers, std::vector<CachePlane> planes, int64_t batch, int64_t max_tokens, int64_t block_size,
          torch::TensorOptions opts, bool shuffle_blocks = false, uint64_t shuffle_seed = 0);

  int64_t n_layers() const { return n_layers_; }
  int64_t batch() const { return batch_; }
  int64_t block_size() const { return block_size_; }
  int64_t max_blocks() const { return max_blocks_; }              // MB, blocks per sequence
  int64_t capacity() const { return max_blocks_ * block_size_; }  // tokens per sequence
  const std::vector<CachePlane>& planes() const { return planes_; }

  // [NB, BS, heads, dim]; NB = batch * MB.
  const torch::Tensor& pool(int64_t layer, int64_t plane) const { return pools_.at(layer).at(plane); }
  // [B, MB] int32 on the pools' device.
  const torch::Tensor& block_table() const { return block_table_; }

  // Bytes of every pool (all layers), as allocated.
  int64_t bytes() const;
  // bytes() / (NB * BS): what one cached token costs over all layers.
  int64_t bytes_per_token() const;

  // Committed tokens per sequence.
  const std::vector<int64_t>& lengths() const { return lengths_; }
  // Sets every sequence's length to `len` without writing rows (benchmarks fill the pools themselves).
  void set_lengths(const std::vector<int64_t>& lens);

  // Starts a step in which sequence b appends n_new[b] tokens (checked against capacity()).
  void begin_step(const std::vector<int64_t>& n_new, int64_t S);
  void end_step();
  void abort_step();  // leaves the lengths as they were (rows written past them are ignored)
  bool in_step() const { return in_step_; }

  // During a step:
  int64_t step_len() const { return step_len_; }  // S, the width of the step's inputs
  const std::vector<int64_t>& n_new() const { return n_new_; }
  bool uniform() const { return uniform_; }  // every sequence has the same length and n_new == S
  // A uniform step into empty sequences (a prompt prefill of equal lengths): its attention is plain
  // causal attention over the step's own rows, which attention kinds compute without the cache.
  bool fresh_uniform() const { return uniform_ && !lengths_.empty() && lengths_[0] == 0; }
  int64_t max_total() const { return max_total_; }  // max over b of lengths + n_new
  // The step's index tensors, each built on first use in the step (a decode step is short, and
  // not every attention kind reads every one).
  torch::Tensor positions() const;       // [B, S] int64: lengths[b] + s
  torch::Tensor valid() const;           // [B, S] bool: s < n_new[b]
  torch::Tensor seq_lens_after() const;  // [B] int32: lengths + n_new
  // [B, S] int64: the last position query s of sequence b sees (its own, capped at the sequence's
  // last row for padding queries, at least 0): what attention_mask() marks, as one index per query.
  torch::Tensor last_visible() const;

  // Writes the step's rows [B, S, heads, dim] of `plane` (padding rows are not written).
  void write(int64_t layer, int64_t plane, const torch::Tensor& rows);
  // Rows of positions [0, len) of every sequence, [B, len, heads, dim]: a view when the blocks
  // are in order, a gather otherwise. Rows at or past a sequence's length are stale or zero.
  torch::Tensor gather(int64_t layer, int64_t plane, int64_t len) const;
  // [B, 1, S, len] bool: query s of sequence b may see key j (causal, within its own length;
  // a padding query sees position 0 only, so no row is empty). Built once per step and length:
  // every layer masks alike.
  const torch::Tensor& attention_mask(int64_t len) const;
  // cos and sin of `rope` at the step's positions, [B, S, dim/2] fp32 each: taken once per step
  // and rope (every layer rotates at the same positions).
  const std::pair<torch::Tensor, torch::Tensor>& step_rope(const Rope& rope) const;

 private:
  int64_t n_layers_, batch_, block_size_, max_blocks_;
  std::vector<CachePlane> planes_;
  std::vector<std::vector<torch::Tensor>> pools_;  // [layer][plane]
  std::vector<int32_t> table_host_;                // [B * MB]
  torch::Tensor block_table_;
  bool in_order_ = true;
  std::vector<int64_t> lengths_;

  bool in_step_ = false, uniform_ = false;
  int64_t step_len_ = 0, max_total_ = 0;
  std::vector<int64_t> n_new_;
  // Host copies of the step's indices (slot in [NB * BS] and row in [B * S] of each new token) and
  // their tensors, made on first use.
  std::vector<int64_t> pos_host_, valid_host_, last_host_, slots_host_, rows_host_;
  std::vector<int32_t> after_host_;
  mutable torch::Tensor positions_, valid_, seq_lens_, last_visible_, write_slots_, write_rows_;
  // Per-step memos (reset by begin_step).
  mutable torch::Tensor mask_;
  mutable int64_t mask_len_ = -1;
  mutable std::pair<torch::Tensor, torch::Tensor> rope_tables_;
  mutable const void* rope_key_ = nullptr;
};

// Attention of the step's queries over the cache: q [B, S, H, Dq], k [B, L, Hk, Dq], v [B, L, Hk, Dv]
// (Hk divides H; L = cache.max_total()); query s of sequence b sees keys up to
// cache.last_visible()[b][s]. fp32 on the CPU goes through torch.ops.tinyseek.decode_attention,
// anything else through torch's SDPA under cache.attention_mask(L) (none for a uniform one-token
// step). Padding query rows come back as zeros.
// scale: the softmax scale (nullopt: 1/sqrt(Dq)). Returns [B, S, H, Dv].
torch::Tensor attend_over_cache(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const KVCache& cache, std::optional<double> scale);

// Rotary embedding at explicit positions: x [B, S, H, D] rotated by positions [B, S] (int64),
// through the op Rope::apply uses (torch.ops.tinyseek.rope).
torch::Tensor rope_at(const Rope& rope, const torch::Tensor& x, const torch::Tensor& positions);
// The same at the positions of `cache`'s current step (its memoized tables).
torch::Tensor rope_at(const Rope& rope, const torch::Tensor& x, const KVCache& cache);

}  // namespace ts::nn
