#include "csrc/nn/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <stdexcept>

#include "csrc/util/host_tensor.h"

namespace ts::nn {

namespace {

KVCache make_cache(const Transformer& m, int64_t batch, int64_t max_tokens, int64_t block_size, bool shuffle) {
  TORCH_CHECK(m->n_layers() >= 1, "Decoder: the model has no blocks");
  const auto& w = m->embed->weight;
  // bf16 pools on CUDA (what the mla_decode kernel reads, and half the bytes); the parameters'
  // dtype elsewhere (the CPU paths run fp32).
  auto opts = w.options().requires_grad(false);
  if (w.is_cuda()) opts = opts.dtype(torch::kBFloat16);
  return KVCache(m->n_layers(), m->blocks[0]->attn->cache_planes(), batch, max_tokens, block_size, opts, shuffle,
                 /*shuffle_seed=*/0x5eed);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The first most likely token of a float row.
int64_t argmax_first(const float* row, int64_t V) {
  int64_t best = 0;
  for (int64_t v = 1; v < V; ++v)
    if (row[v] > row[best]) best = v;
  return best;
}

bool ends_with(const std::vector<int64_t>& seq, const std::vector<int64_t>& tail) {
  return !tail.empty() && tail.size() <= seq.size() && std::equal(tail.rbegin(), tail.rend(), seq.rbegin());
}

}  // namespace

Decoder::Decoder(Transformer model, int64_t batch, int64_t max_tokens, int64_t block_size, bool shuffle_blocks)
    : model_(std::move(model)),
      cache_(make_cache(model_, batch, max_tokens, block_size, shuffle_blocks)),
      rope_(Rope::make(model_->blocks[0]->attn->rope_dim(), cache_.capacity(), model_->config().rope_theta,
                       model_->embed->weight.device())) {}

Decoder::Output Decoder::step(const torch::Tensor& tokens, const std::vector<int64_t>& n_new) {
  torch::NoGradGuard ng;
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(0) == cache_.batch(), "Decoder::step: expected tokens [", cache_.batch(),
              ", S], got ", tokens.sizes());
  cache_.begin_step(n_new, tokens.size(1));
  try {
    auto h = model_->embed_tokens(tokens);
    for (int64_t l = 0; l < model_->n_layers(); ++l) h = model_->blocks[l]->forward_cached(h, rope_, cache_, l);
    Output out{h, model_->logits(h)};
    cache_.end_step();
    return out;
  } catch (...) {
    cache_.abort_step();
    throw;
  }
}

Decoder::Output Decoder::step(const torch::Tensor& tokens) {
  return step(tokens, std::vector<int64_t>(static_cast<size_t>(tokens.size(0)), tokens.size(1)));
}

void set_mla_decode_path(Transformer& model, MlaDecodePath path) {
  for (auto& blk : model->blocks)
    if (auto mla = std::dynamic_pointer_cast<MultiHeadLatentAttentionImpl>(blk->attn)) mla->decode_path = path;
}

torch::Tensor sampling_probs(const torch::Tensor& logits, const SamplingOptions& o) {
  auto l = logits.detach().to(torch::kCPU, torch::kDouble).contiguous().flatten();
  const int64_t V = l.numel();
  TORCH_CHECK(V >= 1, "sampling_probs: empty logits");
  const double* x = l.data_ptr<double>();
  auto p = torch::zeros({V}, torch::kDouble);
  double* q = p.data_ptr<double>();
  if (o.temperature == 0) {
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v)
      if (x[v] > x[best]) best = v;
    q[best] = 1;
    return p;
  }
  TORCH_CHECK(o.temperature > 0, "sampling_probs: temperature must be >= 0, got ", o.temperature);
  std::vector<double> z(x, x + V);
  for (auto& v : z) v /= o.temperature;
  double kth = -std::numeric_limits<double>::infinity();
  if (o.top_k > 0 && o.top_k < V) {
    std::vector<double> sorted = z;
    std::nth_element(sorted.begin(), sorted.begin() + (o.top_k - 1), sorted.end(), std::greater<>());
    kth = sorted[static_cast<size_t>(o.top_k - 1)];
  }
  double zmax = -std::numeric_limits<double>::infinity();
  for (double v : z)
    if (v >= kth) zmax = std::max(zmax, v);
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) {
    q[v] = z[v] >= kth ? std::exp(z[v] - zmax) : 0.0;
    sum += q[v];
  }
  for (int64_t v = 0; v < V; ++v) q[v] /= sum;
  if (o.top_p < 1) {
    std::vector<int64_t> order(static_cast<size_t>(V));
    for (int64_t v = 0; v < V; ++v) order[v] = v;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return q[a] > q[b]; });
    double before = 0, kept = 0;
    for (int64_t v : order) {
      if (before >= o.top_p) {
        before += q[v];
        q[v] = 0;
        continue;
      }
      before += q[v];
      kept += q[v];
    }
    for (int64_t v = 0; v < V; ++v) q[v] /= kept;
  }
  return p;
}

double TokenSampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int64_t TokenSampler::draw(const torch::Tensor& probs) {
  auto p = probs.to(torch::kDouble).contiguous();
  const double* q = p.data_ptr<double>();
  const int64_t V = p.numel();
  double total = 0;
  for (int64_t v = 0; v < V; ++v) total += q[v];
  const double target = uniform() * total;
  double cum = 0;
  int64_t last = 0;
  for (int64_t v = 0; v < V; ++v) {
    if (q[v] <= 0) continue;
    cum += q[v];
    last = v;
    if (target < cum) return v;
  }
  return last;  // rounding left target at the very top
}

namespace {

// The prompts' longest length; throws std::invalid_argument for what generate() rejects.
int64_t check_requests(const Transformer& model, const std::vector<GenerateRequest>& requests,
                       const GenerateOptions& o) {
  const int64_t V = model->config().vocab_size;
  if (requests.empty()) throw std::invalid_argument("generate: no requests");
  if (o.max_new_tokens < 1)
    throw std::invalid_argument(fmt::format("generate: max_new_tokens must be >= 1, got {}", o.max_new_tokens));
  if (o.speculative) {
    const int64_t D = model->mtp_depth();
    if (D == 0)
      throw std::invalid_argument(
          "generate: speculative decoding drafts with the MTP modules, and this model has none (model.mtp.depth 0)");
    if (o.draft_tokens < 0 || o.draft_tokens > D)
      throw std::invalid_argument(fmt::format(
          "generate: draft_tokens must be 0 (the depth) to model.mtp.depth ({}), got {}", D, o.draft_tokens));
  }
  int64_t P = 0;
  for (size_t b = 0; b < requests.size(); ++b) {
    const auto& prompt = requests[b].prompt;
    if (prompt.empty()) throw std::invalid_argument(fmt::format("generate: prompt {} is empty", b));
    for (int64_t t : prompt)
      if (t < 0 || t >= V)
        throw std::invalid_argument(fmt::format("generate: prompt {} holds token {}, outside [0, {})", b, t, V));
    P = std::max<int64_t>(P, static_cast<int64_t>(prompt.size()));
  }
  return P;
}

// Appends a generated token; true when the sequence is finished (a stop token or sequence, or
// max_new_tokens), with its finish reason set.
bool append_token(Completion& c, int64_t t, const GenerateOptions& o) {
  c.tokens.push_back(t);
  const bool stop = std::find(o.stop_tokens.begin(), o.stop_tokens.end(), t) != o.stop_tokens.end() ||
                    std::any_of(o.stop_sequences.begin(), o.stop_sequences.end(),
                                [&](const auto& s) { return ends_with(c.tokens, s); });
  if (stop || static_cast<int64_t>(c.tokens.size()) == o.max_new_tokens) {
    c.finish_reason = stop ? "stop" : "length";
    return true;
  }
  return false;
}

// The prompts as a padded [B, P] batch and their lengths.
torch::Tensor prompt_batch(const std::vector<GenerateRequest>& requests, int64_t P, std::vector<int64_t>& lens) {
  const int64_t B = static_cast<int64_t>(requests.size());
  lens.assign(static_cast<size_t>(B), 0);
  auto tokens = torch::zeros({B, P}, torch::kInt64);
  for (int64_t b = 0; b < B; ++b) {
    lens[b] = static_cast<int64_t>(requests[b].prompt.size());
    tokens[b].narrow(0, 0, lens[b]).copy_(torch::tensor(requests[b].prompt, torch::kInt64));
  }
  return tokens;
}

// An int64 tensor of `shape` on `dev` from host values (one copy).
// Row b, position pos[b] of x [B, S, C] -> [B, C].
GenerateResult generate_speculative(Transformer& model, const std::vector<GenerateRequest>& requests,
                                    const GenerateOptions& o, int64_t P);

}  // namespace

GenerateResult generate(Transformer& model, const std::vector<GenerateRequest>& requests, const GenerateOptions& o) {
  const int64_t P = check_requests(model, requests, o);
  torch::NoGradGuard ng;
  const bool was_training = model->is_training();
  model->eval();
  if (o.speculative) {
    auto res = generate_speculative(model, requests, o, P);
    if (was_training) model->train();
    return res;
  }
  const int64_t B = static_cast<int64_t>(requests.size()), V = model->config().vocab_size;
  const auto dev = model->embed->weight.device();

  GenerateResult res;
  res.completions.resize(static_cast<size_t>(B));
  Decoder dec(model, B, P + o.max_new_tokens, o.block_size);
  res.stats.batch = B;
  res.stats.kv_cache_bytes = dec.cache().bytes();
  res.stats.kv_cache_bytes_per_token = dec.cache().bytes_per_token();

  std::vector<TokenSampler> samplers;
  for (const auto& r : requests) samplers.emplace_back(r.seed);
  std::vector<int64_t> lens;
  auto tokens = prompt_batch(requests, P, lens);
  for (auto l : lens) res.stats.prompt_tokens += l;
  const auto t_prefill = std::chrono::steady_clock::now();
  auto logits = dec.step(tokens.to(dev), lens).logits;  // [B, P, V]
  // Each row's last real position.
  std::vector<int64_t> last(lens.begin(), lens.end());
  for (auto& l : last) --l;
  auto next = rows_at(logits, last).to(torch::kCPU, torch::kFloat).contiguous();  // [B, V]
  res.stats.prefill_s = seconds_since(t_prefill);

  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<std::vector<torch::Tensor>> kept(static_cast<size_t>(B));
  const auto t_decode = std::chrono::steady_clock::now();
  for (bool first = true;; first = false) {
    std::vector<int64_t> step_tokens(static_cast<size_t>(B), 0), n_new(static_cast<size_t>(B), 0);
    bool any = false;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      const float* row = next.data_ptr<float>() + b * V;
      const int64_t t =
          o.sampling.temperature == 0 ? argmax_first(row, V) : samplers[b].draw(sampling_probs(next[b], o.sampling));
      if (o.keep_logits) kept[b].push_back(next[b].clone());
      if (!first) ++res.stats.decode_tokens;
      if (append_token(res.completions[b], t, o)) {
        done[b] = true;
        continue;
      }
      step_tokens[b] = t;
      n_new[b] = 1;
      any = true;
    }
    if (!any) break;
    next = dec.step(util::host_tensor_view(step_tokens, {B, 1}, dev), n_new)
               .logits.select(1, 0)
               .to(torch::kCPU, torch::kFloat)
               .contiguous();
  }
  res.stats.decode_s = seconds_since(t_decode);
  if (o.keep_logits)
    for (int64_t b = 0; b < B; ++b) res.completions[b].logits = torch::stack(kept[b]);
  if (was_training) model->train();
  return res;
}

namespace {

// Speculative decoding with the MTP chain (see generate.h). Per sequence b, with N[b] tokens in
// the main cache and x_N the newest committed token (not fed yet):
//   draft   depth k runs its block over positions [c_k, N-1], position j combining h^{k-1}_j with
//           the embedding of token j+k (a draft when j+k > N), and its logits at N-1 draft token
//           N+k. Depth k's inputs h^{k-1} are depth k-1's outputs of this step, plus, when c_k is
//           one short of c_{k-1}, depth k-1's output at c_k from the step before (the carry);
//           depth 1's are the main model's outputs at [c_1, N-1].
//   verify  the main model runs [x_N, d_1, ..., d_n] at positions N..N+n; its logits accept a
//           prefix d_1..d_a of the drafts and give one more token; its cache rolls back to the
//           committed tokens. Depth k's cache keeps the positions whose tokens turned out
//           committed or accepted, j+k <= N+a: c_k = min(N, N+a-k+1), at least 0. With every
//           draft accepted that is all of them, and the next step's inputs of every depth start
//           where the previous depth's do.
GenerateResult generate_speculative(Transformer& model, const std::vector<GenerateRequest>& requests,
                                    const GenerateOptions& o, int64_t P) {
  const int64_t B = static_cast<int64_t>(requests.size()), V = model->config().vocab_size;
  const int64_t D = o.draft_tokens > 0 ? o.draft_tokens : model->mtp_depth();
  const auto dev = model->embed->weight.device();
  const int64_t capacity = P + o.max_new_tokens + D + 1;
  const bool greedy = o.sampling.temperature == 0;

  GenerateResult res;
  res.completions.resize(static_cast<size_t>(B));
  res.stats.batch = B;
  res.stats.drafts_verified.assign(static_cast<size_t>(D), 0);
  res.stats.drafts_accepted.assign(static_cast<size_t>(D), 0);
  Decoder dec(model, B, capacity, o.block_size);
  const auto planes = model->mtp[0]->block->attn->cache_planes();
  std::vector<KVCache> caches;  // one per draft depth, a layer each
  caches.reserve(static_cast<size_t>(D));
  for (int64_t k = 0; k < D; ++k)
    caches.emplace_back(1, planes, B, capacity, o.block_size, dec.cache().pool(0, 0).options());
  res.stats.kv_cache_bytes = dec.cache().bytes();
  for (const auto& c : caches) res.stats.kv_cache_bytes += c.bytes();
  res.stats.kv_cache_bytes_per_token = res.stats.kv_cache_bytes / (B * dec.cache().capacity());

  std::vector<TokenSampler> samplers;
  for (const auto& r : requests) samplers.emplace_back(r.seed);
  std::vector<std::vector<int64_t>> seq(static_cast<size_t>(B));  // committed tokens: prompt + completion
  for (int64_t b = 0; b < B; ++b) seq[b] = requests[b].prompt;
  std::vector<int64_t> lens;
  auto tokens = prompt_batch(requests, P, lens);
  for (auto l : lens) res.stats.prompt_tokens += l;

  // The main model's step: the hidden states feed depth 1, the logits choose tokens.
  const auto t_prefill = std::chrono::steady_clock::now();
  auto out = dec.step(tokens.to(dev), lens);
  std::vector<int64_t> last(lens.begin(), lens.end());
  for (auto& l : last) --l;
  auto next = rows_at(out.logits, last).to(torch::kCPU, torch::kFloat).contiguous();  // [B, V]
  res.stats.prefill_s = seconds_since(t_prefill);
  torch::Tensor main_hidden = out.hidden;  // [B, S, C]: rows from position c_1[b] on

  std::vector<bool> done(static_cast<size_t>(B), false);
  auto choose = [&](int64_t b, const torch::Tensor& logits_row) {
    return greedy ? argmax_first(logits_row.data_ptr<float>(), V)
                  : samplers[b].draw(sampling_probs(logits_row, o.sampling));
  };
  for (int64_t b = 0; b < B; ++b) {  // the first token comes from the prefill, as in plain decoding
    const int64_t t = choose(b, next[b]);
    seq[b].push_back(t);
    done[b] = append_token(res.completions[b], t, o);
  }

  const auto t_decode = std::chrono::steady_clock::now();
  std::vector<std::vector<int64_t>> c(static_cast<size_t>(D), std::vector<int64_t>(static_cast<size_t>(B), 0));
  std::vector<torch::Tensor> carry(static_cast<size_t>(D));  // carry[k]: [B, C], depth k's output at c_{k+1} (k >= 1)
  std::vector<torch::Tensor> outs(static_cast<size_t>(D));   // outs[k]: depth k's outputs of the step (k >= 1)
  std::vector<std::vector<int64_t>> out_start(static_cast<size_t>(D));         // the position of outs[k]'s row 0
  std::vector<int64_t> N(lens);                                                // tokens in the main cache
  std::vector<std::vector<torch::Tensor>> draft_rows(static_cast<size_t>(B));  // keep_logits
  const auto& rope = dec.rope();
  for (;;) {
    std::vector<int64_t> active;
    for (int64_t b = 0; b < B; ++b)
      if (!done[b]) active.push_back(b);
    if (active.empty()) break;

    // Draft: depths 1..D, each one step of its own cache.
    std::vector<std::vector<int64_t>> drafts(static_cast<size_t>(B));
    std::vector<torch::Tensor> q_probs(static_cast<size_t>(B * D));  // draft distributions (sampling)
    std::vector<std::vector<torch::Tensor>> step_draft_logits(static_cast<size_t>(B));
    torch::Tensor prev = main_hidden;                         // depth k-1's outputs of this step
    std::vector<int64_t> prev_start(static_cast<size_t>(B));  // the position of prev's row 0
    for (int64_t b = 0; b < B; ++b) prev_start[b] = c[0][b];
    for (int64_t k = 1; k <= D; ++k) {
      auto& ck = c[k - 1];
      std::vector<int64_t> n_new(static_cast<size_t>(B), 0), offset(static_cast<size_t>(B), 1);
      int64_t S = 1;
      for (int64_t b : active) {
        n_new[b] = N[b] - ck[b];
        offset[b] = prev_start[b] - ck[b] == 1 ? 0 : 1;  // row 0 of [carry; prev] is position ck when carried
        S = std::max(S, n_new[b]);
      }
      // Inputs: hidden rows [carry; prev] from position ck on, tokens j+k (committed or drafted).
      // Usually every active row is carried (or none is, in the first step): then the rows are a
      // prefix of [carry; prev] or of prev; otherwise a gather picks them row by row.
      const bool carried = k > 1 && carry[k - 1].defined();  // none before the first step has run
      bool all_carried = carried, none_carried = true;
      for (int64_t b : active)
        all_carried = all_carried && offset[b] == 0, none_carried = none_carried && offset[b] == 1;
      std::vector<int64_t> tok(static_cast<size_t>(B * S), 0);
      for (int64_t b : active)
        for (int64_t s = 0; s < n_new[b]; ++s) {
          const int64_t pos = ck[b] + s + k;  // the token this position embeds
          const int64_t have = static_cast<int64_t>(seq[b].size());
          tok[b * S + s] = pos < have ? seq[b][pos] : drafts[b][pos - have];
        }
      torch::Tensor h_in;
      if (none_carried && S <= prev.size(1)) {
        h_in = prev.narrow(1, 0, S);
      } else if (all_carried && S - 1 <= prev.size(1)) {
        h_in = torch::cat({carry[k - 1].unsqueeze(1), prev.narrow(1, 0, S - 1)}, 1);
      } else {
        auto stacked = torch::cat({carried ? carry[k - 1].unsqueeze(1) : prev.narrow(1, 0, 1), prev}, 1);
        std::vector<int64_t> idx(static_cast<size_t>(B * S), 0);
        for (int64_t b : active)
          for (int64_t s = 0; s < n_new[b]; ++s) idx[b * S + s] = std::min<int64_t>(s + offset[b], stacked.size(1) - 1);
        h_in = stacked.gather(1, util::host_tensor(idx, {B, S}, dev).unsqueeze(-1).expand({B, S, stacked.size(2)}));
      }
      auto next_tok = util::host_tensor_view(tok, {B, S}, dev);
      // The draft logits come from row N-1; the last depth's other rows are only there to be
      // cached, so its block takes that row alone past the attention.
      std::vector<int64_t> at_last(static_cast<size_t>(B), 0);
      for (int64_t b : active) at_last[b] = n_new[b] - 1;
      const bool last_depth = k == D;
      auto& cache = caches[k - 1];
      cache.begin_step(n_new, S);
      torch::Tensor h;
      try {
        h = model->mtp[k - 1]->forward_cached(h_in, model->embed_tokens(next_tok), rope, cache, 0,
                                              last_depth ? &at_last : nullptr);
        cache.end_step();
      } catch (...) {
        cache.abort_step();
        throw;
      }
      // The draft logits at N-1. The cache keeps every row until the verification says which
      // drafts they embedded were right.
      auto logits = model->head(model->mtp[k - 1]->norm(last_depth ? h.select(1, 0) : rows_at(h, at_last)));
      auto lrows = logits.to(torch::kCPU, torch::kFloat).contiguous();  // [B, V]
      if (o.keep_logits)
        for (int64_t b : active) step_draft_logits[b].push_back(lrows[b].clone());
      for (int64_t b : active) {
        if (greedy) {
          drafts[b].push_back(argmax_first(lrows.data_ptr<float>() + b * V, V));
        } else {
          auto q = sampling_probs(lrows[b], o.sampling);
          drafts[b].push_back(samplers[b].draw(q));
          q_probs[b * D + (k - 1)] = q;
        }
      }
      if (k < D) {
        outs[k] = h;
        out_start[k] = ck;
      }
      for (int64_t b : active) prev_start[b] = ck[b];
      prev = h;
    }
    if (o.keep_logits)
      for (int64_t b : active) {
        draft_rows[b].push_back(torch::stack(step_draft_logits[b]));
        res.completions[b].draft_committed.push_back(static_cast<int64_t>(seq[b].size()));
      }

    // Verify: [x_N, d_1..d_D] through the main model.
    std::vector<int64_t> vtok(static_cast<size_t>(B * (D + 1)), 0);
    std::vector<int64_t> n_new(static_cast<size_t>(B), 0);
    for (int64_t b : active) {
      vtok[b * (D + 1)] = seq[b].back();
      for (int64_t i = 0; i < D; ++i) vtok[b * (D + 1) + i + 1] = drafts[b][i];
      n_new[b] = D + 1;
    }
    auto vout = dec.step(util::host_tensor_view(vtok, {B, D + 1}, dev), n_new);
    ++res.stats.verify_steps;
    auto vlog = vout.logits.to(torch::kCPU, torch::kFloat).contiguous();  // [B, D+1, V]
    std::vector<int64_t> keep(dec.cache().lengths()), n_accepted(static_cast<size_t>(B), 0);
    res.stats.sequence_steps += static_cast<int64_t>(active.size());
    for (int64_t b : active) {
      int64_t accepted = 0;
      int64_t bonus = -1;
      for (int64_t i = 0; i < D; ++i) {
        ++res.stats.drafts_verified[i];
        const int64_t d = drafts[b][i];
        bool ok;
        if (greedy) {
          ok = argmax_first(vlog.data_ptr<float>() + (b * (D + 1) + i) * V, V) == d;
        } else {
          auto p = sampling_probs(vlog[b][i], o.sampling);
          const auto& q = q_probs[b * D + i];
          const double pd = p[d].item<double>(), qd = q[d].item<double>();
          ok = samplers[b].uniform() * qd < pd;  // u < min(1, p/q)
          if (!ok) {
            auto residual = (p - q).clamp_min(0);
            bonus = residual.sum().item<double>() > 0 ? samplers[b].draw(residual) : samplers[b].draw(p);
          }
        }
        if (!ok) break;
        ++res.stats.drafts_accepted[i];
        ++accepted;
      }
      if (bonus < 0) bonus = choose(b, vlog[b][accepted]);
      // Commit the accepted drafts and the bonus token, up to a stop.
      keep[b] = N[b] + accepted + 1;  // x_N and the accepted drafts are in the main cache
      n_accepted[b] = accepted;
      bool finished = false;
      for (int64_t i = 0; i <= accepted && !finished; ++i) {
        const int64_t t = i < accepted ? drafts[b][i] : bonus;
        seq[b].push_back(t);
        ++res.stats.decode_tokens;
        finished = append_token(res.completions[b], t, o);
      }
      done[b] = finished;
    }
    dec.cache().set_lengths(keep);
    // The depths' caches keep the positions whose embedded tokens are committed,
    // c_k = min(N, N+a-k+1), and a depth whose c_k falls one short of depth k-1's takes depth
    // k-1's output at c_k (from the step just verified) as its carry.
    for (int64_t k = 1; k <= D; ++k) {
      std::vector<int64_t> len(caches[k - 1].lengths());
      for (int64_t b : active) len[b] = c[k - 1][b] = std::clamp<int64_t>(N[b] + n_accepted[b] - k + 1, 0, N[b]);
      caches[k - 1].set_lengths(len);
    }
    for (int64_t k = 2; k <= D; ++k) {
      std::vector<int64_t> at(static_cast<size_t>(B), 0);
      bool any = false;
      for (int64_t b : active)
        if (c[k - 2][b] - c[k - 1][b] == 1) {
          at[b] = c[k - 1][b] - out_start[k - 1][b];
          TORCH_CHECK(at[b] >= 0 && at[b] < outs[k - 1].size(1), "generate: internal error: depth ", k - 1,
                      "'s output at position ", c[k - 1][b], " was not computed in this step");
          any = true;
        }
      carry[k - 1] = any ? rows_at(outs[k - 1], at) : torch::Tensor();
    }
    for (int64_t b : active) N[b] = keep[b];
    main_hidden = vout.hidden;  // positions [N_old, N_old + D]; depth 1 starts at c_1 = N_old
  }
  res.stats.decode_s = seconds_since(t_decode);
  if (o.keep_logits)
    for (int64_t b = 0; b < B; ++b)
      if (!draft_rows[b].empty()) res.completions[b].draft_logits = torch::stack(draft_rows[b]);
  return res;
}

}  // namespace

std::vector<int64_t> greedy_recompute(Transformer& model, const std::vector<int64_t>& prompt, int64_t n,
                                      torch::Tensor* logits) {
  torch::NoGradGuard ng;
  const bool was_training = model->is_training();
  model->eval();
  const auto dev = model->embed->weight.device();
  std::vector<int64_t> ctx = prompt, out;
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < n; ++i) {
    auto last = model->forward(torch::tensor(ctx, torch::kInt64).unsqueeze(0).to(dev))[0][-1];
    auto row = last.to(torch::kCPU, torch::kFloat).contiguous();
    const int64_t t = argmax_first(row.data_ptr<float>(), row.numel());
    if (logits) rows.push_back(row);
    ctx.push_back(t);
    out.push_back(t);
  }
  if (logits) *logits = rows.empty() ? torch::Tensor() : torch::stack(rows);
  if (was_training) model->train();
  return out;
}

std::vector<int64_t> bytes_to_tokens(const std::string& text) {
  std::vector<int64_t> out;
  out.reserve(text.size());
  for (unsigned char c : text) out.push_back(c);
  return out;
}

std::string tokens_to_bytes(const std::vector<int64_t>& tokens) {
  std::string out;
  for (int64_t t : tokens) {
    if (t >= 0 && t < 256)
      out.push_back(static_cast<char>(t));
    else
      out += "\xEF\xBF\xBD";  // U+FFFD: not a byte
  }
  return out;
}

}  // namespace ts::nn
