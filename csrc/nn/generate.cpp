#include "csrc/nn/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <stdexcept>

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

GenerateResult generate(Transformer& model, const std::vector<GenerateRequest>& requests, const GenerateOptions& o) {
  const int64_t B = static_cast<int64_t>(requests.size()), V = model->config().vocab_size;
  if (B == 0) throw std::invalid_argument("generate: no requests");
  if (o.max_new_tokens < 1)
    throw std::invalid_argument(fmt::format("generate: max_new_tokens must be >= 1, got {}", o.max_new_tokens));
  int64_t P = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& prompt = requests[b].prompt;
    if (prompt.empty()) throw std::invalid_argument(fmt::format("generate: prompt {} is empty", b));
    for (int64_t t : prompt)
      if (t < 0 || t >= V)
        throw std::invalid_argument(fmt::format("generate: prompt {} holds token {}, outside [0, {})", b, t, V));
    P = std::max<int64_t>(P, static_cast<int64_t>(prompt.size()));
  }
  torch::NoGradGuard ng;
  const bool was_training = model->is_training();
  model->eval();
  const auto dev = model->embed->weight.device();

  GenerateResult res;
  res.completions.resize(static_cast<size_t>(B));
  Decoder dec(model, B, P + o.max_new_tokens, o.block_size);
  res.stats.batch = B;
  res.stats.kv_cache_bytes = dec.cache().bytes();
  res.stats.kv_cache_bytes_per_token = dec.cache().bytes_per_token();

  std::vector<TokenSampler> samplers;
  std::vector<int64_t> lens(static_cast<size_t>(B));
  auto tokens = torch::zeros({B, P}, torch::kInt64);
  for (int64_t b = 0; b < B; ++b) {
    samplers.emplace_back(requests[b].seed);
    const auto& prompt = requests[b].prompt;
    lens[b] = static_cast<int64_t>(prompt.size());
    res.stats.prompt_tokens += lens[b];
    tokens[b].narrow(0, 0, lens[b]).copy_(torch::tensor(prompt, torch::kInt64));
  }
  const auto t_prefill = std::chrono::steady_clock::now();
  auto logits = dec.step(tokens.to(dev), lens).logits;  // [B, P, V]
  // Each row's last real position.
  auto last_pos = (torch::tensor(lens, torch::kInt64) - 1).view({B, 1, 1}).expand({B, 1, V}).to(dev);
  auto next = logits.gather(1, last_pos).squeeze(1).to(torch::kCPU, torch::kFloat).contiguous();  // [B, V]
  res.stats.prefill_s = seconds_since(t_prefill);

  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<std::vector<torch::Tensor>> kept(static_cast<size_t>(B));
  const auto t_decode = std::chrono::steady_clock::now();
  for (bool first = true;; first = false) {
    auto step_tokens = torch::zeros({B, 1}, torch::kInt64);
    std::vector<int64_t> n_new(static_cast<size_t>(B), 0);
    bool any = false;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      auto& c = res.completions[b];
      const float* row = next.data_ptr<float>() + b * V;
      const int64_t t =
          o.sampling.temperature == 0 ? argmax_first(row, V) : samplers[b].draw(sampling_probs(next[b], o.sampling));
      if (o.keep_logits) kept[b].push_back(next[b].clone());
      if (!first) ++res.stats.decode_tokens;
      c.tokens.push_back(t);
      const bool stop = std::find(o.stop_tokens.begin(), o.stop_tokens.end(), t) != o.stop_tokens.end() ||
                        std::any_of(o.stop_sequences.begin(), o.stop_sequences.end(),
                                    [&](const auto& s) { return ends_with(c.tokens, s); });
      if (stop || static_cast<int64_t>(c.tokens.size()) == o.max_new_tokens) {
        done[b] = true;
        c.finish_reason = stop ? "stop" : "length";
        continue;
      }
      step_tokens[b][0] = t;
      n_new[b] = 1;
      any = true;
    }
    if (!any) break;
    next = dec.step(step_tokens.to(dev), n_new).logits.select(1, 0).to(torch::kCPU, torch::kFloat).contiguous();
  }
  res.stats.decode_s = seconds_since(t_decode);
  if (o.keep_logits)
    for (int64_t b = 0; b < B; ++b) res.completions[b].logits = torch::stack(kept[b]);
  if (was_training) model->train();
  return res;
}

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
