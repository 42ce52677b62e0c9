#include "csrc/nn/attention/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "csrc/ops/decode_attention.h"
#include "csrc/ops/rope.h"
#include "csrc/util/host_tensor.h"

namespace ts::nn {

using util::host_tensor;

KVCache::KVCache(int64_t n_layers, std::vector<CachePlane> planes, int64_t batch, int64_t max_tokens,
                 int64_t block_size, torch::TensorOptions opts, bool shuffle_blocks, uint64_t shuffle_seed)
    : n_layers_(n_layers), batch_(batch), block_size_(block_size), planes_(std::move(planes)) {
  TORCH_CHECK(n_layers >= 1 && batch >= 1 && max_tokens >= 1 && block_size >= 1,
              "KVCache: expected positive n_layers, batch, max_tokens and block_size, got ", n_layers, ", ", batch,
              ", ", max_tokens, ", ", block_size);
  max_blocks_ = (max_tokens + block_size - 1) / block_size;
  const int64_t nb = batch * max_blocks_;
  // Zeros, not empty: the naive paths read whole blocks and mask the unused rows, and a masked
  // row must still be finite (0 * NaN would leak into the weighted sum).
  for (int64_t l = 0; l < n_layers; ++l) {
    std::vector<torch::Tensor> per_layer;
    for (const auto& p : planes_) per_layer.push_back(torch::zeros({nb, block_size, p.heads, p.dim}, opts));
    pools_.push_back(std::move(per_layer));
  }
  table_host_.resize(static_cast<size_t>(nb));
  std::iota(table_host_.begin(), table_host_.end(), 0);
  if (shuffle_blocks) {
    std::mt19937_64 rng(shuffle_seed);
    std::shuffle(table_host_.begin(), table_host_.end(), rng);
    in_order_ = false;
  }
  block_table_ = torch::from_blob(table_host_.data(), {batch, max_blocks_}, torch::kInt32).clone().to(opts.device());
  lengths_.assign(static_cast<size_t>(batch), 0);
}

int64_t KVCache::bytes() const {
  int64_t n = 0;
  for (const auto& layer : pools_)
    for (const auto& t : layer) n += static_cast<int64_t>(t.nbytes());
  return n;
}

int64_t KVCache::bytes_per_token() const { return bytes() / (batch_ * max_blocks_ * block_size_); }

void KVCache::set_lengths(const std::vector<int64_t>& lens) {
  TORCH_CHECK(!in_step_, "KVCache::set_lengths: inside a step");
  TORCH_CHECK(static_cast<int64_t>(lens.size()) == batch_, "KVCache::set_lengths: expected ", batch_, " lengths, got ",
              lens.size());
  for (auto l : lens)
    TORCH_CHECK(l >= 0 && l <= capacity(), "KVCache::set_lengths: length ", l, " outside [0, ", capacity(), "]");
  lengths_ = lens;
}

void KVCache::begin_step(const std::vector<int64_t>& n_new, int64_t S) {
  TORCH_CHECK(!in_step_, "KVCache::begin_step: the previous step was not ended");
  TORCH_CHECK(static_cast<int64_t>(n_new.size()) == batch_, "KVCache::begin_step: expected ", batch_,
              " counts of new tokens, got ", n_new.size());
  pos_host_.assign(static_cast<size_t>(batch_ * S), 0);
  valid_host_.assign(static_cast<size_t>(batch_ * S), 0);
  last_host_.assign(static_cast<size_t>(batch_ * S), 0);
  after_host_.assign(static_cast<size_t>(batch_), 0);
  slots_host_.clear();
  rows_host_.clear();
  max_total_ = 0;
  uniform_ = true;
  for (int64_t b = 0; b < batch_; ++b) {
    const int64_t n = n_new[b], past = lengths_[b];
    TORCH_CHECK(n >= 0 && n <= S, "KVCache::begin_step: sequence ", b, " appends ", n, " tokens, expected 0..", S);
    TORCH_CHECK(past + n <= capacity(), "KVCache::begin_step: sequence ", b, " would hold ", past + n,
                " tokens, more than the cache's capacity ", capacity());
    uniform_ = uniform_ && n == S && past == lengths_[0];
    after_host_[b] = static_cast<int32_t>(past + n);
    max_total_ = std::max(max_total_, past + n);
    for (int64_t s = 0; s < S; ++s) {
      pos_host_[b * S + s] = past + s;
      valid_host_[b * S + s] = s < n;
      last_host_[b * S + s] = std::max<int64_t>(0, std::min(past + s, past + n - 1));
      if (s < n) {
        const int64_t p = past + s;
        slots_host_.push_back(int64_t{table_host_[b * max_blocks_ + p / block_size_]} * block_size_ + p % block_size_);
        rows_host_.push_back(b * S + s);
      }
    }
  }
  positions_ = valid_ = seq_lens_ = last_visible_ = write_slots_ = write_rows_ = torch::Tensor();
  n_new_ = n_new;
  step_len_ = S;
  mask_ = torch::Tensor();
  mask_len_ = -1;
  rope_key_ = nullptr;
  in_step_ = true;
}

torch::Tensor KVCache::positions() const {
  if (!positions_.defined()) positions_ = host_tensor(pos_host_, {batch_, step_len_}, block_table_.device());
  return positions_;
}

torch::Tensor KVCache::valid() const {
  if (!valid_.defined()) valid_ = host_tensor(valid_host_, {batch_, step_len_}, block_table_.device()).ne(0);
  return valid_;
}

torch::Tensor KVCache::seq_lens_after() const {
  if (!seq_lens_.defined()) seq_lens_ = host_tensor(after_host_, {batch_}, block_table_.device());
  return seq_lens_;
}

torch::Tensor KVCache::last_visible() const {
  if (!last_visible_.defined()) last_visible_ = host_tensor(last_host_, {batch_, step_len_}, block_table_.device());
  return last_visible_;
}

void KVCache::end_step() {
  TORCH_CHECK(in_step_, "KVCache::end_step: no step in progress");
  for (int64_t b = 0; b < batch_; ++b) lengths_[b] += n_new_[b];
  in_step_ = false;
}

void KVCache::abort_step() { in_step_ = false; }

void KVCache::write(int64_t layer, int64_t plane, const torch::Tensor& rows) {
  TORCH_CHECK(in_step_, "KVCache::write: outside a step (call begin_step first)");
  const auto& pool = pools_.at(layer).at(plane);
  const auto& p = planes_[plane];
  TORCH_CHECK(rows.dim() == 4 && rows.size(0) == batch_ && rows.size(1) == step_len_ && rows.size(2) == p.heads &&
                  rows.size(3) == p.dim,
              "KVCache::write: expected rows [", batch_, ", ", step_len_, ", ", p.heads, ", ", p.dim, "], got ",
              rows.sizes());
  if (slots_host_.empty()) return;
  torch::NoGradGuard ng;  // the cache holds values, never a graph
  const auto dev = block_table_.device();
  if (!write_slots_.defined()) write_slots_ = host_tensor(slots_host_, {static_cast<int64_t>(slots_host_.size())}, dev);
  auto src = rows.detach().reshape({batch_ * step_len_, p.heads, p.dim});
  if (static_cast<int64_t>(rows_host_.size()) < batch_ * step_len_) {  // padding rows out
    if (!write_rows_.defined()) write_rows_ = host_tensor(rows_host_, {static_cast<int64_t>(rows_host_.size())}, dev);
    src = src.index_select(0, write_rows_);
  }
  pool.view({-1, p.heads, p.dim}).index_copy_(0, write_slots_, src.to(pool.scalar_type()));
}

torch::Tensor KVCache::gather(int64_t layer, int64_t plane, int64_t len) const {
  TORCH_CHECK(len >= 0 && len <= capacity(), "KVCache::gather: length ", len, " outside [0, ", capacity(), "]");
  const auto& pool = pools_.at(layer).at(plane);
  const auto& p = planes_[plane];
  if (in_order_) return pool.view({batch_, max_blocks_ * block_size_, p.heads, p.dim}).narrow(1, 0, len);
  // Slot of position j of sequence b, through the block table.
  auto j = torch::arange(len, block_table_.options().dtype(torch::kInt64));
  auto blocks = block_table_.to(torch::kInt64).index_select(1, j.div(block_size_, "floor"));  // [B, len]
  auto slots = blocks * block_size_ + j.remainder(block_size_);
  return pool.view({-1, p.heads, p.dim}).index_select(0, slots.flatten()).view({batch_, len, p.heads, p.dim});
}

const torch::Tensor& KVCache::attention_mask(int64_t len) const {
  TORCH_CHECK(in_step_, "KVCache::attention_mask: outside a step");
  if (mask_len_ == len) return mask_;
  auto j = torch::arange(len, last_visible().options()).view({1, 1, len});
  mask_ = (j <= last_visible().unsqueeze(-1)).unsqueeze(1);
  mask_len_ = len;
  return mask_;
}

const std::pair<torch::Tensor, torch::Tensor>& KVCache::step_rope(const Rope& rope) const {
  TORCH_CHECK(in_step_, "KVCache::step_rope: outside a step");
  if (rope_key_ == rope.cos.data_ptr()) return rope_tables_;
  const int64_t half = rope.cos.size(1);
  auto idx = positions().flatten().to(rope.cos.device());
  rope_tables_ = {rope.cos.index_select(0, idx).view({batch_, step_len_, half}),
                  rope.sin.index_select(0, idx).view({batch_, step_len_, half})};
  rope_key_ = rope.cos.data_ptr();
  return rope_tables_;
}

torch::Tensor attend_over_cache(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const KVCache& cache, std::optional<double> scale) {
  torch::Tensor o;  // [B, S, H, Dv]
  if (q.is_cpu() && q.scalar_type() == torch::kFloat && k.scalar_type() == torch::kFloat) {
    o = ops::decode_attention(q, k, v, cache.last_visible(), scale ? *scale : 1.0 / std::sqrt(double(q.size(3))));
  } else {
    std::optional<at::Tensor> mask;
    if (!(cache.uniform() && q.size(1) == 1)) mask = cache.attention_mask(k.size(1));
    // Pools may be stored narrower than the activations (bf16 on CUDA): attend in q's dtype.
    auto kt = k.to(q.scalar_type()).transpose(1, 2), vt = v.to(q.scalar_type()).transpose(1, 2);
    o = at::scaled_dot_product_attention(q.transpose(1, 2), kt, vt, mask, 0.0, /*is_causal=*/false, scale,
                                         /*enable_gqa=*/k.size(2) != q.size(2))
            .transpose(1, 2);
  }
  if (cache.uniform()) return o;
  return o * cache.valid().view({q.size(0), q.size(1), 1, 1}).to(o.scalar_type());
}

torch::Tensor rope_at(const Rope& rope, const torch::Tensor& x, const torch::Tensor& positions) {
  const int64_t B = x.size(0), S = x.size(1);
  auto idx = positions.flatten().to(rope.cos.device());
  return ops::rope(x, rope.cos.index_select(0, idx).view({B, S, -1}), rope.sin.index_select(0, idx).view({B, S, -1}));
}

torch::Tensor rope_at(const Rope& rope, const torch::Tensor& x, const KVCache& cache) {
  const auto& [c, s] = cache.step_rope(rope);
  return ops::rope(x, c, s);
}

}  // namespace ts::nn
