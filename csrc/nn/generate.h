// Text generation from any trained Transformer (dense or MoE blocks; MHA, GQA, MQA or MLA).
//
//   Decoder      the model's KV-cached forward: every block's attention through one paged
//                KVCache (nn/attention/kv_cache.h), a step returning hidden states and logits.
//   sampling     temperature, top-k, top-p over one row of logits; one seeded generator per
//                sequence, so a sequence's tokens depend on its prompt and seed only, never on
//                which other sequences share the batch.
//   generate()   batched generation over ragged prompts: one prefill step, then one token per
//                step for every unfinished sequence; stop tokens, stop sequences, max_new_tokens.
//   speculative  (GenerateOptions::speculative) the model's MTP modules (model.mtp.depth > 0,
//                csrc/nn/mtp.h) draft the next tokens, chained as in training (depth k drafts
//                token N+k from depth k-1's hidden state and the token before it), and one
//                forward of the main model verifies them all; the KV caches roll back past the
//                first rejected draft. Greedy verification yields exactly the tokens of plain
//                greedy decoding; with temperature > 0 a draft d is accepted with probability
//                min(1, p(d) / q(d)) and a rejection resamples from norm(max(p - q, 0)), so the
//                tokens follow the main model's sampling distribution p (q: the draft's).
//
// MLA decodes through torch.ops.tinyseek.mla_decode (the absorbed path) unless
// set_mla_decode_path says otherwise.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "csrc/nn/attention/kv_cache.h"
#include "csrc/nn/attention/mla.h"
#include "csrc/nn/transformer.h"

namespace ts::nn {

class Decoder {
 public:
  // Caches up to max_tokens tokens for each of `batch` sequences in blocks of block_size rows
  // (shuffle_blocks: hand the blocks out in a random order, to exercise the paging). The cache
  // takes the device of the model's parameters; bf16 pools on CUDA, their dtype elsewhere.
  Decoder(Transformer model, int64_t batch, int64_t max_tokens, int64_t block_size = 64, bool shuffle_blocks = false);

  struct Output {
    torch::Tensor hidden;  // [B, S, C] the last block's output (before the final norm)
    torch::Tensor logits;  // [B, S, V]
  };
  // tokens [B, S] int64: row b's first n_new[b] are real tokens appended to sequence b, the rest
  // padding (their rows of the output hold no meaning). No autograd graph is kept.
  Output step(const torch::Tensor& tokens, const std::vector<int64_t>& n_new);
  Output step(const torch::Tensor& tokens);  // every token real

  KVCache& cache() { return cache_; }
  const Rope& rope() const { return rope_; }

 private:
  Transformer model_;
  KVCache cache_;
  Rope rope_;
};

// Selects the decode path of every MLA block (other kinds have one path).
void set_mla_decode_path(Transformer& model, MlaDecodePath path);

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy (the first most likely token); else logits / temperature
  int64_t top_k = 0;         // > 0: keep tokens whose logit is at least the k-th largest (ties kept)
  // < 1: after top-k, keep tokens in order of decreasing probability (ties by index) while the
  // mass before each is below top_p: the smallest such set whose mass reaches top_p.
  double top_p = 1.0;
};

// The distribution a sampled token is drawn from: logits [V] -> probabilities [V] in float64,
// softmax(logits / temperature) restricted to the kept tokens and renormalized (greedy: one-hot).
torch::Tensor sampling_probs(const torch::Tensor& logits, const SamplingOptions& o);

// One sequence's random stream: draws a token from probabilities [V] (float64) by inverting the
// cumulative distribution at a uniform u in [0, 1) from a 64-bit Mersenne Twister seeded by seed.
class TokenSampler {
 public:
  explicit TokenSampler(uint64_t seed) : rng_(seed) {}
  int64_t draw(const torch::Tensor& probs);
  double uniform();  // the next u in [0, 1), 53 bits

 private:
  std::mt19937_64 rng_;
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::vector<int64_t> stop_tokens;                  // a sequence ends after it generates one of these
  std::vector<std::vector<int64_t>> stop_sequences;  // ... or once its generated tokens end with one
  int64_t block_size = 64;                           // KV-cache rows per block
  bool keep_logits = false;                          // Completion::logits (tests, log-probabilities)
  bool speculative = false;  // draft with the MTP modules and verify (needs model.mtp.depth > 0)
  int64_t draft_tokens = 0;  // drafts per step, 1..model.mtp.depth; 0 = the depth
};

struct GenerateRequest {
  std::vector<int64_t> prompt;  // at least one token, each in [0, vocab_size)
  uint64_t seed = 0;            // this sequence's TokenSampler
};

struct Completion {
  std::vector<int64_t> tokens;  // generated, stop token or sequence included
  std::string finish_reason;    // "stop" (a stop token or sequence) or "length" (max_new_tokens)
  torch::Tensor logits;         // [tokens, V] float32 on CPU, the logits each token was drawn from (keep_logits)
  // Speculative decoding with keep_logits: each step's draft logits [steps, drafts, V] (float32,
  // CPU) and the number of committed tokens (prompt included) when the step drafted.
  torch::Tensor draft_logits;
  std::vector<int64_t> draft_committed;
};

struct GenerateStats {
  int64_t batch = 0, prompt_tokens = 0;
  double prefill_s = 0;                                      // the prompts' forward, up to the first tokens' logits
  double decode_s = 0;                                       // every later step
  int64_t decode_tokens = 0;                                 // tokens drawn from the later steps' logits
  int64_t kv_cache_bytes = 0, kv_cache_bytes_per_token = 0;  // as allocated (KVCache::bytes)
  // Speculative decoding: forwards of the main model after the prefill (one per step, for the
  // whole batch), the steps summed over the sequences each took part in, and per draft depth k
  // the drafts that were verified (every earlier draft of the step accepted) and those accepted.
  // A sequence's tokens per step: decode_tokens / sequence_steps.
  int64_t verify_steps = 0, sequence_steps = 0;
  std::vector<int64_t> drafts_verified, drafts_accepted;
  double decode_tokens_per_s() const { return decode_s > 0 ? static_cast<double>(decode_tokens) / decode_s : 0; }
  double acceptance(size_t depth) const {  // of draft depth `depth` (0-based), given it was verified
    return depth < drafts_verified.size() && drafts_verified[depth] > 0
               ? static_cast<double>(drafts_accepted[depth]) / static_cast<double>(drafts_verified[depth])
               : 0;
  }
};

struct GenerateResult {
  std::vector<Completion> completions;  // one per request, in order
  GenerateStats stats;
};

// Generates for every request in one batch (model in eval mode, no gradients). Throws
// std::invalid_argument for an empty prompt, a token outside the vocabulary, or speculative
// decoding without MTP modules (or more drafts than their depth).
GenerateResult generate(Transformer& model, const std::vector<GenerateRequest>& requests, const GenerateOptions& o);

// The reference without a cache: greedy decoding that runs the model's forward over the whole
// context for every new token (what the cache saves; for tests and the benchmark). Returns
// the n tokens and, when logits is not null, their logits [n, V].
std::vector<int64_t> greedy_recompute(Transformer& model, const std::vector<int64_t>& prompt, int64_t n,
                                      torch::Tensor* logits = nullptr);

// Bytes as tokens for byte-level models (vocab >= 256), and back; ids > 255 become U+FFFD.
std::vector<int64_t> bytes_to_tokens(const std::string& text);
std::string tokens_to_bytes(const std::vector<int64_t>& tokens);

}  // namespace ts::nn
