#include "csrc/train/data.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "csrc/rl/tasks.h"

namespace ts::train {
namespace fs = std::filesystem;
using config::ConfigError;

namespace {

// splitmix64: a tiny, portable generator (std distributions differ across standard libraries,
// and the corpus must be identical everywhere).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  double uniform() { return (next() >> 11) * 0x1.0p-53; }
};

// Zipf-like index in [0, n): heavy head, long tail.
int64_t zipf(Rng& r, int64_t n) {
  double u = r.uniform();
  return std::min<int64_t>(n - 1, static_cast<int64_t>(std::floor(std::pow(static_cast<double>(n), u))) - 1);
}

}  // namespace

// Structure at several scales, each learnable by a small transformer:
//  - characters: words are built from a syllable inventory (consonant-vowel patterns);
//  - words: a 500-word lexicon with Zipfian frequencies and a sparse bigram chain
//    (each word has four preferred successors);
//  - paragraphs: a topic (a subset of the lexicon) and a made-up name introduced in the heading
//    and repeated later, which only attention over long distances can predict;
//  - counting runs ("41 42 43"), which need the previous number.
std::string synthetic_corpus(int64_t bytes, uint64_t seed) {
  Rng r{seed * 0x2545F4914F6CDD1Dull + 1};
  const std::string cons = "bcdfghklmnprstvz", vows = "aeiou";
  auto syllable = [&] {
    std::string s(1, cons[r.below(cons.size())]);
    s += vows[r.below(vows.size())];
    if (r.below(4) == 0) s += cons[r.below(cons.size())];
    return s;
  };
  const int64_t kWords = 500, kSucc = 4, kTopic = 80;
  std::vector<std::string> lex(kWords);
  for (auto& w : lex) {
    int n = 1 + static_cast<int>(zipf(r, 4));
    for (int i = 0; i < n; ++i) w += syllable();
  }
  std::vector<std::array<int64_t, kSucc>> succ(kWords);
  for (auto& s : succ)
    for (auto& x : s) x = zipf(r, kWords);

  std::string out;
  out.reserve(bytes + 256);
  while (static_cast<int64_t>(out.size()) < bytes) {
    std::string name;
    int nl = 5 + static_cast<int>(r.below(4));
    for (int i = 0; i < nl; ++i) name += (i % 2 ? vows[r.below(vows.size())] : cons[r.below(cons.size())]);
    name[0] = static_cast<char>(name[0] - 'a' + 'A');
    std::vector<int64_t> topic(kTopic);
    for (auto& t : topic) t = zipf(r, kWords);
    out += "== " + name + " ==\n";
    const int sentences = 3 + static_cast<int>(r.below(6));
    int64_t w = topic[zipf(r, kTopic)];
    for (int s = 0; s < sentences; ++s) {
      const int words = 5 + static_cast<int>(r.below(8));
      const int name_at = r.below(3) == 0 ? static_cast<int>(r.below(words)) : -1;
      const int count_at = r.below(6) == 0 ? static_cast<int>(r.below(words)) : -1;
      for (int i = 0; i < words; ++i) {
        if (i) out += ' ';
        if (i == name_at) {
          out += name;
        } else if (i == count_at) {
          int64_t n = 1 + r.below(97);
          for (int k = 0; k < 3; ++k) {
            if (k) out += ' ';
            out += std::to_string(n + k);
          }
        } else {
          w = r.below(10) < 7 ? succ[w][zipf(r, kSucc)] : topic[zipf(r, kTopic)];
          std::string word = lex[w];
          if (i == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
          out += word;
        }
      }
      out += s + 1 < sentences ? ". " : ".\n\n";
    }
  }
  out.resize(bytes);
  return out;
}

double unigram_entropy(const std::vector<uint16_t>& tokens) {
  if (tokens.empty()) return 0;
  std::vector<int64_t> hist(65536, 0);
  for (auto t : tokens) ++hist[t];
  double h = 0, n = static_cast<double>(tokens.size());
  for (auto c : hist)
    if (c) h -= (c / n) * std::log(c / n);
  return h;
}

namespace {

std::vector<uint16_t> read_shards(const std::string& path) {
  std::vector<fs::path> files;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path))
      if (e.path().extension() == ".bin") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw ConfigError(path + ": data.path: no *.bin uint16 shards in this folder");
  } else {
    files.push_back(path);
  }
  std::vector<uint16_t> tokens;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw ConfigError(f.string() + ": data.path: cannot read the shard");
    const auto size = fs::file_size(f);
    if (size % 2)
      throw ConfigError(f.string() + ": data.path: a uint16 shard must have an even byte count, got " +
                        std::to_string(size));
    const size_t old = tokens.size();
    tokens.resize(old + size / 2);
    in.read(reinterpret_cast<char*>(tokens.data() + old), static_cast<std::streamsize>(size));
  }
  return tokens;
}

}  // namespace

void check_data_config(const config::Config& config) {
  const auto& cfg = config.data;
  const int64_t min_tokens = static_cast<int64_t>(2 * (cfg.seq_len + 1) / cfg.val_fraction);
  if (cfg.source == "task") rl::check_task_config(config.task);
  if (cfg.source == "synthetic" || cfg.source == "task") {
    if (cfg.synthetic_bytes < min_tokens)
      throw config::InvalidKeys({"data.synthetic_bytes", "data.seq_len", "data.val_fraction"},
                                "expected at least " + std::to_string(min_tokens) + " for seq_len " +
                                    std::to_string(cfg.seq_len) + " and val_fraction " +
                                    std::to_string(cfg.val_fraction) + ", got " + std::to_string(cfg.synthetic_bytes));
    return;
  }
  if (cfg.path.empty())
    throw config::InvalidKeys({"data.path", "data.source"}, "required when data.source is '" + cfg.source + "'");
  std::error_code ec;
  const auto st = fs::status(cfg.path, ec);
  if (ec || !fs::exists(st)) throw config::InvalidKeys({"data.path"}, "'" + cfg.path + "': no such file or folder");
  const bool file = fs::is_regular_file(st), folder = fs::is_directory(st);
  if (cfg.source == "text" && !file)
    throw config::InvalidKeys({"data.path"}, "'" + cfg.path + "': expected a regular text file, got " +
                                                 (folder ? "a folder" : "a device, pipe or socket"));
  if (cfg.source == "shards" && !file && !folder)
    throw config::InvalidKeys({"data.path"}, "'" + cfg.path +
                                                 "': expected a uint16 shard file or a folder of them, got a device, "
                                                 "pipe or socket");
}

TokenData load_data(const config::Config& config) {
  check_data_config(config);
  const auto& cfg = config.data;
  TokenData d;
  std::vector<uint16_t> all;
  if (cfg.source == "task") {
    // Worked examples: the training part from the task's train problems, the validation part
    // (the last val_fraction, as the split below cuts it) from held-out ones, so validation loss
    // is on unseen problems.
    const rl::Task task(config.task);
    const auto n_val = static_cast<int64_t>(static_cast<double>(cfg.synthetic_bytes) * cfg.val_fraction);
    const std::string text =
        task.corpus(rl::Split::kTrain, cfg.synthetic_bytes - n_val) + task.corpus(rl::Split::kHeldout, n_val);
    for (unsigned char c : text) all.push_back(c);
    d.description = fmt::format("task corpus '{}' ({} bytes of worked examples, seed {})", config.task.name,
                                cfg.synthetic_bytes, config.task.seed);
  } else if (cfg.source == "synthetic") {
    std::string text = synthetic_corpus(cfg.synthetic_bytes, static_cast<uint64_t>(cfg.synthetic_seed));
    all.assign(text.begin(), text.end());
    for (auto& t : all) t &= 0xFF;  // char may be signed; tokens are bytes
    d.description =
        "synthetic corpus (" + std::to_string(text.size()) + " bytes, seed " + std::to_string(cfg.synthetic_seed) + ")";
  } else {
    if (cfg.source == "text") {
      std::ifstream in(cfg.path, std::ios::binary);
      if (!in || fs::is_directory(cfg.path)) throw ConfigError(cfg.path + ": data.path: cannot read the text file");
      std::stringstream ss;
      ss << in.rdbuf();
      const std::string text = ss.str();
      all.reserve(text.size());
      for (unsigned char c : text) all.push_back(c);
      d.description = "text " + cfg.path + " (" + std::to_string(text.size()) + " bytes)";
    } else {
      all = read_shards(cfg.path);
      d.description = "uint16 shards " + cfg.path + " (" + std::to_string(all.size()) + " tokens)";
    }
  }
  const int64_t min_tokens = 2 * (cfg.seq_len + 1);
  if (static_cast<int64_t>(all.size()) < min_tokens / cfg.val_fraction)
    throw ConfigError(
        (cfg.path.empty() ? std::string("data") : cfg.path) +
        ": data: " + (all.empty() ? std::string("empty") : "too small (" + std::to_string(all.size()) + " tokens)") +
        "; need at least " + std::to_string(static_cast<int64_t>(min_tokens / cfg.val_fraction)) +
        " tokens for seq_len " + std::to_string(cfg.seq_len) + " and val_fraction " + std::to_string(cfg.val_fraction));
  const size_t n_val = static_cast<size_t>(all.size() * cfg.val_fraction);
  d.train.assign(all.begin(), all.end() - static_cast<int64_t>(n_val));
  d.val.assign(all.end() - static_cast<int64_t>(n_val), all.end());
  d.max_token = *std::max_element(all.begin(), all.end());
  d.unigram_entropy = unigram_entropy(d.train);
  return d;
}

namespace {

Batch make_batch(const std::vector<uint16_t>& tokens, int64_t B, int64_t T, const std::vector<int64_t>& offsets) {
  auto inputs = at::empty({B, T}, at::kLong), targets = at::empty({B, T}, at::kLong);
  auto* in = inputs.data_ptr<int64_t>();
  auto* tg = targets.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      in[b * T + t] = tokens[offsets[b] + t];
      tg[b * T + t] = tokens[offsets[b] + t + 1];
    }
  return {inputs, targets};
}

}  // namespace

Batch train_batch(const std::vector<uint16_t>& tokens, int64_t B, int64_t T, uint64_t seed, int64_t step) {
  Rng r{seed * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(step) * 0xD1B54A32D192ED03ull)};
  const int64_t span = static_cast<int64_t>(tokens.size()) - T - 1;
  std::vector<int64_t> offsets(B);
  for (auto& o : offsets) o = r.below(span + 1);
  return make_batch(tokens, B, T, offsets);
}

Batch val_batch(const std::vector<uint16_t>& tokens, int64_t B, int64_t T, int64_t i, int64_t n_batches) {
  const int64_t span = static_cast<int64_t>(tokens.size()) - T - 1;
  const int64_t total = B * n_batches;
  std::vector<int64_t> offsets(B);
  for (int64_t b = 0; b < B; ++b) offsets[b] = (i * B + b) * span / std::max<int64_t>(total, 1);
  return make_batch(tokens, B, T, offsets);
}

}  // namespace ts::train
