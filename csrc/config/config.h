// Typed configuration: one struct per area, each with a visit() that lists its fields once.
// The same description drives parsing (strict, with file:line errors), printing
// (config.resolved.yaml) and --set overrides. New technique keys are added here as fields.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace ts::config {

// A usage or config error: the CLI prints what() on one line and exits with status 2.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A check across fields failed (model.n_heads must divide model.d_model, say). keys[0] is the key
// the message is about, the others are involved; what() is "keys[0]: message". Variant::locate
// turns it into a ConfigError that starts with the file:line of the first of the keys the config
// sets, which is what every caller that has the variant does.
struct InvalidKeys : ConfigError {
  InvalidKeys(std::vector<std::string> keys_, const std::string& message)
      : ConfigError(keys_.at(0) + ": " + message), keys(std::move(keys_)) {}
  std::vector<std::string> keys;
};

// Field constraints, interpreted by every visitor.
struct Range {
  double lo, hi;
};
struct OneOf {
  std::vector<std::string> values;
};
struct NoCheck {};
// A name that becomes one folder of the run's path: 1 to 100 characters from [A-Za-z0-9._-],
// starting with a letter or digit (so never ".", "..", "/x", "a/b" or "-x").
struct PathName {};
inline constexpr size_t kMaxNameLength = 100;
// Throws ConfigError("<what>: ...") unless `name` is a PathName.
void check_path_name(const std::string& name, const std::string& what);

struct DataConfig {
  std::string source = "synthetic";  // synthetic | text | shards | task (worked examples of config task)
  std::string path;                  // text file (UTF-8, byte tokens) or a folder/file of uint16 shards
  int64_t seq_len = 128;
  double val_fraction = 0.1;
  int64_t synthetic_bytes = 1 << 21;  // size of the generated corpus
  int64_t synthetic_seed = 7;

  template <class V>
  void visit(V& v) {
    v("source", source, OneOf{{"synthetic", "text", "shards", "task"}});
    v("path", path, NoCheck{});
    v("seq_len", seq_len, Range{2, 1 << 20});
    v("val_fraction", val_fraction, Range{0.001, 0.5});
    v("synthetic_bytes", synthetic_bytes, Range{4096, 1 << 30});
    v("synthetic_seed", synthetic_seed, Range{0, 1e15});
  }
};

struct AttentionConfig {
  std::string kind = "mha";  // the attention family (csrc/nn/attention): mha | gqa | mqa | mla
  int64_t n_kv_heads = 0;    // gqa: key/value heads, dividing model.n_heads (0 = n_heads); mqa uses 1
  // MLA (DeepSeek-V2 §2.1): the KV latent c_KV has kv_lora_rank values (d_c), the query latent
  // q_lora_rank (d_c'; 0 = full-rank query projection); per head the query/key have
  // qk_nope_head_dim + qk_rope_head_dim values (the rope key, d_R, is shared by all heads), the
  // value v_head_dim. softmax_scale 0 means 1/sqrt(qk_nope_head_dim + qk_rope_head_dim).
  int64_t kv_lora_rank = 64;
  int64_t q_lora_rank = 0;
  int64_t qk_nope_head_dim = 32;
  int64_t qk_rope_head_dim = 16;
  int64_t v_head_dim = 32;
  double softmax_scale = 0;

  template <class V>
  void visit(V& v) {
    v("kind", kind, OneOf{{"mha", "gqa", "mqa", "mla"}});
    v("n_kv_heads", n_kv_heads, Range{0, 1024});
    v("kv_lora_rank", kv_lora_rank, Range{1, 1 << 16});
    v("q_lora_rank", q_lora_rank, Range{0, 1 << 16});
    v("qk_nope_head_dim", qk_nope_head_dim, Range{1, 4096});
    v("qk_rope_head_dim", qk_rope_head_dim, Range{2, 4096});
    v("v_head_dim", v_head_dim, Range{1, 4096});
    v("softmax_scale", softmax_scale, Range{0, 1e3});
  }
};

// Mixture of experts (model.ffn: moe; csrc/nn/moe.h), DeepSeekMoE / V2 / V3. Every layer from
// first_k_dense on replaces its dense SwiGLU by n_shared_experts always-active experts plus
// n_routed_experts fine-grained routed ones, each a SwiGLU of width expert_hidden, top_k per token.
struct MoeConfig {
  int64_t n_routed_experts = 8;        // E
  int64_t n_shared_experts = 1;        // always active; together one SwiGLU of n_shared * expert_hidden
  int64_t top_k = 2;                   // K routed experts per token
  int64_t expert_hidden = 88;          // SwiGLU hidden width of one (routed or shared) expert
  int64_t first_k_dense = 0;           // the first layers keep the dense FFN (model.ffn_hidden)
  std::string score_func = "softmax";  // softmax (V2: softmax over all, top-K kept) | sigmoid (V3)
  // softmax only: renormalize the K kept weights to sum 1 (sigmoid always renormalizes, as in V3).
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;  // gate weights are multiplied by this (2.5 in V3)
  int64_t n_group = 1;                 // group-limited routing: experts in n_group equal groups ...
  int64_t topk_group = 1;              // ... only the topk_group best groups (sum of top-2) are eligible
  // 0 = dropless; else in training each expert takes ceil(cf * T*K / E) slots. Evaluation and
  // generation are dropless (which tokens drop depends on the batch a token shares).
  double capacity_factor = 0;
  // Balancing, combinable: expert-level aux loss (V2), sequence-wise aux loss (V3), and the
  // auxiliary-loss-free per-expert bias (b_i += bias_update_speed * sign(mean load - load_i)).
  double aux_loss_alpha = 0;
  double seq_aux_loss_alpha = 0;
  bool loss_free = false;
  double bias_update_speed = 0.001;

  template <class V>
  void visit(V& v) {
    v("n_routed_experts", n_routed_experts, Range{1, 1 << 16});
    v("n_shared_experts", n_shared_experts, Range{0, 1024});
    v("top_k", top_k, Range{1, 1024});
    v("expert_hidden", expert_hidden, Range{1, 1 << 20});
    v("first_k_dense", first_k_dense, Range{0, 1024});
    v("score_func", score_func, OneOf{{"softmax", "sigmoid"}});
    v("norm_topk_prob", norm_topk_prob, NoCheck{});
    v("routed_scaling_factor", routed_scaling_factor, Range{1e-6, 1e6});
    v("n_group", n_group, Range{1, 1 << 16});
    v("topk_group", topk_group, Range{1, 1 << 16});
    v("capacity_factor", capacity_factor, Range{0, 1e6});
    v("aux_loss_alpha", aux_loss_alpha, Range{0, 1e3});
    v("seq_aux_loss_alpha", seq_aux_loss_alpha, Range{0, 1e3});
    v("loss_free", loss_free, NoCheck{});
    v("bias_update_speed", bias_update_speed, Range{0, 10});
  }
};

// Multi-token prediction (DeepSeek-V3 §2.2; csrc/nn/mtp.h): `depth` sequential modules, module k
// predicting token i+k+1; training minimizes L_main + (loss_weight / depth) * sum_k CE_k.
struct MtpConfig {
  int64_t depth = 0;                // D; 0 = off
  double loss_weight = 0.3;         // lambda
  int64_t switch_step = -1;         // from this training step on, lambda = switch_loss_weight; -1 = never
  double switch_loss_weight = 0.1;  // V3: 0.3 for the first 10T tokens, then 0.1

  template <class V>
  void visit(V& v) {
    v("depth", depth, Range{0, 16});
    v("loss_weight", loss_weight, Range{0, 100});
    v("switch_step", switch_step, Range{-1, 1e12});
    v("switch_loss_weight", switch_loss_weight, Range{0, 100});
  }
};

struct ModelConfig {
  int64_t vocab_size = 256;  // byte-level tokens
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t ffn_hidden = 352;   // SwiGLU hidden width
  std::string ffn = "dense";  // dense (SwiGLU of ffn_hidden) | moe (the moe section)
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  double init_std = 0.02;
  AttentionConfig attention;
  MoeConfig moe;
  MtpConfig mtp;

  template <class V>
  void visit(V& v) {
    v("vocab_size", vocab_size, Range{2, 1 << 20});
    v("d_model", d_model, Range{8, 1 << 16});
    v("n_layers", n_layers, Range{1, 1024});
    v("n_heads", n_heads, Range{1, 1024});
    v("ffn_hidden", ffn_hidden, Range{1, 1 << 20});
    v("ffn", ffn, OneOf{{"dense", "moe"}});
    v("rope_theta", rope_theta, Range{1, 1e9});
    v("norm_eps", norm_eps, Range{1e-12, 1e-1});
    v("init_std", init_std, Range{1e-6, 1});
    v.section("attention", attention);
    v.section("moe", moe);
    v.section("mtp", mtp);
  }
};

struct TrainConfig {
  int64_t steps = 300;
  int64_t batch_size = 16;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;  // cosine decays to lr * min_lr_ratio
  int64_t warmup_steps = 20;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double grad_clip = 1.0;  // global L2 norm; 0 = off
  int64_t eval_every = 100;
  int64_t eval_batches = 8;
  int64_t log_every = 10;
  int64_t checkpoint_every = 100;
  int64_t stop_at = 0;  // end this invocation after this step (checkpoint kept; --resume continues); 0 = off
  std::string on_nonfinite = "stop";  // stop | skip
  std::string device = "auto";        // auto | cpu | cuda
  int64_t threads = 0;                // intra-op threads; 0 = torch's default
  int64_t debug_nan_step = -1;        // fault injection for tests: make this step's loss NaN
  // Start from these weights instead of a random initialisation (kind pretrain): a trained run,
  // RUN_DIR[/VARIANT] (its latest checkpoint), or hf:DIR, a Hugging Face checkpoint folder
  // (csrc/train/hf.h). The configured model must be the stored one; "" = random.
  std::string init_from;

  template <class V>
  void visit(V& v) {
    v("steps", steps, Range{1, 1e9});
    v("batch_size", batch_size, Range{1, 1 << 20});
    v("lr", lr, Range{0, 10});
    v("min_lr_ratio", min_lr_ratio, Range{0, 1});
    v("warmup_steps", warmup_steps, Range{0, 1e9});
    v("weight_decay", weight_decay, Range{0, 10});
    v("beta1", beta1, Range{0, 0.99999});
    v("beta2", beta2, Range{0, 0.99999999});
    v("adam_eps", adam_eps, Range{1e-30, 1});
    v("grad_clip", grad_clip, Range{0, 1e9});
    v("eval_every", eval_every, Range{1, 1e9});
    v("eval_batches", eval_batches, Range{1, 1e6});
    v("log_every", log_every, Range{1, 1e9});
    v("checkpoint_every", checkpoint_every, Range{1, 1e9});
    v("stop_at", stop_at, Range{0, 1e9});
    v("on_nonfinite", on_nonfinite, OneOf{{"stop", "skip"}});
    v("device", device, OneOf{{"auto", "cpu", "cuda"}});
    v("threads", threads, Range{0, 256});
    v("debug_nan_step", debug_nan_step, Range{-1, 1e9});
    v("init_from", init_from, NoCheck{});
  }
};

struct PrecisionConfig {
  std::string kind = "fp32";  // fp32 | bf16 (autocast on CUDA) | fp8 (FP8 GEMMs in every ts::nn::Linear)
  // FP8 (kind: fp8; DeepSeek-V3 §3.3). Only ts::nn::Linear (attention projections, FFN) runs in
  // FP8; embedding, output head, norms and the attention core stay fp32. On CPU the GEMMs run
  // through the exact emulator (kernels/fp8.h), whose accumulator the next three keys describe.
  std::string fp8_recipe = "blockwise";  // blockwise (V3: 1x128 tiles, 128x128 weight blocks) | per_tensor_delayed
  int64_t accum_mantissa_bits = 13;      // accumulator mantissa bits (23 = fp32; ~13 on H800, V3)
  int64_t promote_interval = 128;        // promote partial sums to fp32 every N_C of K; 0 = never
  std::string accum_model = "align_truncate";  // align_truncate (V3's description) | truncate_sum
  int64_t amax_history_len = 16;               // per_tensor_delayed: steps of amax history per tensor
  // Study knob, any kind: the input row of the first token of every sequence is multiplied by this
  // power of two in every ts::nn::Linear and the output row divided back (exact in fp32): one
  // massive-activation token per sequence, a dynamic-range stress for the quantizers. 0 = off.
  double inject_outliers = 0;

  template <class V>
  void visit(V& v) {
    v("kind", kind, OneOf{{"fp32", "bf16", "fp8"}});
    v("fp8_recipe", fp8_recipe, OneOf{{"blockwise", "per_tensor_delayed"}});
    v("accum_mantissa_bits", accum_mantissa_bits, Range{1, 23});
    v("promote_interval", promote_interval, Range{0, 1 << 30});
    v("accum_model", accum_model, OneOf{{"align_truncate", "truncate_sum"}});
    v("amax_history_len", amax_history_len, Range{1, 1 << 16});
    v("inject_outliers", inject_outliers, Range{0, 1 << 30});
  }
};

// The FP8 accumulation study (kind: fp8_accumulation, experiments/fp8_accumulation.cpp): random
// GEMMs [m, K] x [K, n] for K = k_min, 2 k_min, ..., k_max, each run with accumulators of
// {23, limited_mantissa_bits} bits and promotion every {0 (never), promote_interval}.
struct Fp8AccumulationConfig {
  int64_t m = 128;
  int64_t n = 128;
  int64_t k_min = 512;
  int64_t k_max = 16384;
  int64_t limited_mantissa_bits = 13;
  int64_t promote_interval = 128;
  std::string accum_model = "both";     // align_truncate | truncate_sum | both
  std::string distribution = "normal";  // normal: N(0, 1) entries | uniform_positive: U(0, 1)

  template <class V>
  void visit(V& v) {
    v("m", m, Range{1, 1 << 16});
    v("n", n, Range{1, 1 << 16});
    v("k_min", k_min, Range{1, 1 << 24});
    v("k_max", k_max, Range{1, 1 << 24});
    v("limited_mantissa_bits", limited_mantissa_bits, Range{1, 22});
    v("promote_interval", promote_interval, Range{1, 1 << 30});
    v("accum_model", accum_model, OneOf{{"align_truncate", "truncate_sum", "both"}});
    v("distribution", distribution, OneOf{{"normal", "uniform_positive"}});
  }
};

// Decode throughput after training (kind: attention_ablation, experiments/attention_ablation.cpp):
// batch_size sequences whose KV caches hold `context` tokens (random rows: speed does not depend
// on the values) each decode `steps` more tokens through the whole model, for context =
// context_min, 2 context_min, ..., context_max. MLA decodes on mla_path: absorbed (the
// mla_decode op over the paged latent cache) or naive (decompress the latent, then attend).
// The MTP study's decoding measurement (kind mtp, experiments/mtp_study.h): greedy decoding of
// held-out text (prompts cut from the validation split), plain against speculative with the MTP
// modules, at two batch sizes; every number measured after training, in the same process.
struct SpecBenchConfig {
  int64_t prompts = 16;        // prompts, each decoded at both batch sizes
  int64_t prompt_tokens = 48;  // tokens per prompt
  int64_t new_tokens = 64;     // greedy tokens generated per prompt
  int64_t batch_small = 1;
  int64_t batch_large = 8;  // must divide prompts
  int64_t repeats = 3;      // timed passes; the fastest counts (the others measure the machine's other work)

  template <class V>
  void visit(V& v) {
    v("prompts", prompts, Range{1, 1 << 16});
    v("prompt_tokens", prompt_tokens, Range{1, 1 << 20});
    v("new_tokens", new_tokens, Range{2, 1 << 20});
    v("batch_small", batch_small, Range{1, 1 << 16});
    v("batch_large", batch_large, Range{1, 1 << 16});
    v("repeats", repeats, Range{1, 100});
  }
};

struct DecodeBenchConfig {
  int64_t batch_size = 4;
  int64_t steps = 8;
  int64_t warmup_steps = 2;
  int64_t context_min = 512;
  int64_t context_max = 4096;
  int64_t context_factor = 2;  // contexts context_min, * factor, ... up to context_max
  int64_t block_size = 64;     // rows per cache block (a multiple of 16, as FlashMLA)
  std::string mla_path = "absorbed";

  template <class V>
  void visit(V& v) {
    v("batch_size", batch_size, Range{1, 1 << 16});
    v("steps", steps, Range{1, 1 << 20});
    v("warmup_steps", warmup_steps, Range{0, 1 << 20});
    v("context_min", context_min, Range{1, 1 << 24});
    v("context_max", context_max, Range{1, 1 << 24});
    v("context_factor", context_factor, Range{2, 1 << 20});
    v("block_size", block_size, Range{16, 1 << 16});
    v("mla_path", mla_path, OneOf{{"absorbed", "naive"}});
  }
};

// Text generation from a trained model (csrc/nn/generate.h): the defaults of `tinyseek generate`
// (each has a flag of the same name) and of the loops that sample from a model.
struct GenerateConfig {
  int64_t max_new_tokens = 0;           // per sequence; 0 = as many as the model's context leaves after the prompt
  double temperature = 1.0;             // 0 = greedy (argmax)
  int64_t top_k = 0;                    // keep the k most likely tokens; 0 = off
  double top_p = 1.0;                   // keep the smallest set of most likely tokens with mass >= top_p; 1 = off
  std::string stop;                     // stop string: a sequence ends once its text ends with it ("" = none)
  int64_t block_size = 64;              // KV-cache rows per block (a multiple of 16, as mla_decode takes)
  std::string mla_decode = "absorbed";  // MLA decode path: absorbed (mla_decode op) | naive

  template <class V>
  void visit(V& v) {
    v("max_new_tokens", max_new_tokens, Range{0, 1 << 20});
    v("temperature", temperature, Range{0, 100});
    v("top_k", top_k, Range{0, 1 << 20});
    v("top_p", top_p, Range{1e-6, 1});
    v("stop", stop, NoCheck{});
    v("block_size", block_size, Range{16, 1 << 16});
    v("mla_decode", mla_decode, OneOf{{"absorbed", "naive"}});
  }
};

// A task with verifiable rewards (csrc/rl/tasks.h): the base model's corpus (data.source: task)
// and the problems of kind grpo. RL and evaluation draw from `digits_*` / `numbers`; the corpus
// shows easier instances (`corpus_*`), so the base model knows the format but is weak where RL
// trains. Held-out problems never appear in the corpus or in RL's problems.
struct TaskConfig {
  std::string name = "arithmetic";  // arithmetic | countdown
  std::string ops = "+-";           // arithmetic: the operators drawn from (any of + - *)
  int64_t digits_min = 1;           // arithmetic: operand digits for RL and evaluation
  int64_t digits_max = 3;
  int64_t corpus_digits_min = 1;  // arithmetic: operand digits of the corpus's worked examples
  int64_t corpus_digits_max = 2;
  int64_t numbers = 4;            // countdown: numbers per problem for RL and evaluation (3 or 4)
  int64_t corpus_numbers = 3;     // countdown: numbers per corpus example
  int64_t max_number = 99;        // countdown: numbers drawn from 1..max_number
  int64_t max_target = 999;       // countdown: targets in 1..max_target
  bool worked_steps = true;       // the corpus's <think> shows the steps (else it is empty)
  int64_t corpus_rl_percent = 0;  // share of corpus examples drawn at RL's level instead (a few hard ones)
  int64_t seed = 1;               // the problem stream (train and held-out sets follow from it)
  int64_t heldout_percent = 10;   // share of all problems reserved for evaluation (by a hash of the problem)

  template <class V>
  void visit(V& v) {
    v("name", name, OneOf{{"arithmetic", "countdown"}});
    v("ops", ops, NoCheck{});
    v("digits_min", digits_min, Range{1, 9});
    v("digits_max", digits_max, Range{1, 9});
    v("corpus_digits_min", corpus_digits_min, Range{1, 9});
    v("corpus_digits_max", corpus_digits_max, Range{1, 9});
    v("numbers", numbers, Range{2, 6});
    v("corpus_numbers", corpus_numbers, Range{2, 6});
    v("max_number", max_number, Range{1, 100000});
    v("max_target", max_target, Range{1, 1e9});
    v("worked_steps", worked_steps, NoCheck{});
    v("corpus_rl_percent", corpus_rl_percent, Range{0, 100});
    v("seed", seed, Range{0, 1e15});
    v("heldout_percent", heldout_percent, Range{1, 90});
  }
};

// GRPO (kind: grpo; csrc/rl/grpo.h): DeepSeekMath's group-relative policy optimization with
// TRL's loss types. train.steps counts optimizer steps; each rollout batch serves num_iterations.
struct GrpoConfig {
  std::string init_from;         // the base model: RUN_DIR[/VARIANT] or a variant of this run's folder
  int64_t prompts_per_step = 8;  // P
  int64_t group_size = 8;        // G samples per prompt
  double temperature = 1.0;
  int64_t max_completion_length = 96;
  int64_t num_iterations = 1;  // mu: optimizer steps per rollout batch
  double beta = 0.0;           // k3 KL to the frozen reference (0 = no reference)
  double epsilon = 0.2;
  double epsilon_high = 0;                    // 0 = epsilon (DAPO's clip-higher: 0.28)
  std::string loss_type = "grpo";             // grpo | bnpo | dapo | dr_grpo
  std::string importance_sampling = "token";  // token | sequence (GSPO)
  std::string scale_rewards = "group";        // group | batch | none
  bool clip = true;                           // false: the plain policy gradient (REINFORCE-style baseline)
  double format_weight = 1.0;                 // reward = format_weight * format + accuracy_weight * accuracy
  double accuracy_weight = 1.0;
  int64_t eval_problems = 200;  // held-out problems per evaluation
  int64_t eval_k = 8;           // pass@k samples per problem (0 = greedy pass@1 only)

  template <class V>
  void visit(V& v) {
    v("init_from", init_from, NoCheck{});
    v("prompts_per_step", prompts_per_step, Range{1, 1 << 16});
    v("group_size", group_size, Range{2, 1 << 12});
    v("temperature", temperature, Range{1e-3, 100});
    v("max_completion_length", max_completion_length, Range{1, 1 << 20});
    v("num_iterations", num_iterations, Range{1, 64});
    v("beta", beta, Range{0, 100});
    v("epsilon", epsilon, Range{0, 10});
    v("epsilon_high", epsilon_high, Range{0, 10});
    v("loss_type", loss_type, OneOf{{"grpo", "bnpo", "dapo", "dr_grpo"}});
    v("importance_sampling", importance_sampling, OneOf{{"token", "sequence"}});
    v("scale_rewards", scale_rewards, OneOf{{"group", "batch", "none"}});
    v("clip", clip, NoCheck{});
    v("format_weight", format_weight, Range{0, 100});
    v("accuracy_weight", accuracy_weight, Range{0, 100});
    v("eval_problems", eval_problems, Range{1, 1 << 20});
    v("eval_k", eval_k, Range{0, 1 << 12});
  }
};

// Process groups (csrc/parallel/process_group.h): used when the job has several ranks.
struct DistConfig {
  std::string backend = "auto";  // auto (nccl on cuda, gloo on cpu) | gloo | nccl
  double timeout_s = 60;         // rendezvous, collectives and point-to-point
  double heartbeat_s = 0.5;      // watchdog period
  double dead_after_s = 5;       // a rank silent this long is reported dead and the job stops
  // Data parallelism's gradient all-reduce (csrc/parallel/data_parallel.h): bucket size, and
  // whether buckets are reduced during the backward (false: all after it, for comparison).
  double grad_bucket_mb = 1;
  bool overlap_grad_sync = true;

  template <class V>
  void visit(V& v) {
    v("backend", backend, OneOf{{"auto", "gloo", "nccl"}});
    v("timeout_s", timeout_s, Range{1, 86400});
    v("heartbeat_s", heartbeat_s, Range{0.05, 60});
    v("dead_after_s", dead_after_s, Range{0.5, 3600});
    v("grad_bucket_mb", grad_bucket_mb, Range{0.001, 4096});
    v("overlap_grad_sync", overlap_grad_sync, NoCheck{});
  }
};

// Pipeline parallelism (kind: pipeline; csrc/parallel/executor.h). One rank per device.
struct PipelineConfig {
  std::string schedule = "1f1b";  // 1f1b | zb1p | dualpipe | dualpipev
  int64_t microbatches = 8;       // M per step; train.batch_size is the micro-batch size
  std::string p2p = "auto";       // auto | per_op | batched (how SEND/RECV are posted)
  bool check_sequential = false;  // compare loss and gradients with one-process training
  double check_tolerance = 1e-6;  // max ||g_pipe - g_seq|| / ||g_seq|| per tensor, and loss
  bool measure_costs = false;     // time F, B, W, F&B of each stage, then simulate
  int64_t measure_repeats = 5;
  int64_t debug_exit_rank = -1;  // fault injection for tests: this rank _exits mid-step
  int64_t debug_exit_after = 0;  // ... after this many of its actions in step 0

  template <class V>
  void visit(V& v) {
    v("schedule", schedule, OneOf{{"1f1b", "zb1p", "dualpipe", "dualpipev"}});
    v("microbatches", microbatches, Range{1, 1 << 16});
    v("p2p", p2p, OneOf{{"auto", "per_op", "batched"}});
    v("check_sequential", check_sequential, NoCheck{});
    v("check_tolerance", check_tolerance, Range{0, 1});
    v("measure_costs", measure_costs, NoCheck{});
    v("measure_repeats", measure_repeats, Range{1, 1000});
    v("debug_exit_rank", debug_exit_rank, Range{-1, 1 << 20});
    v("debug_exit_after", debug_exit_after, Range{0, 1 << 30});
  }
};

// How a multi-process job (`tinyseek launch --nproc W`) splits the work.
struct ParallelConfig {
  // Data parallelism (kind pretrain; csrc/parallel/data_parallel.h): every rank trains on
  // train.batch_size / W sequences of each step's batch and the gradients are averaged, so the
  // run's losses do not depend on the rank count. 0 = the job's world size W; otherwise it must
  // equal W (pretraining has no other process dimension).
  int64_t data = 0;
  // Expert parallelism (kinds pretrain and moe_ep; csrc/parallel/expert_parallel.h): the routed
  // experts are split over groups of `expert` consecutive ranks, and the W / expert groups are
  // data-parallel replicas of each other. moe_ep: 0 = one group of all W ranks; pretrain: 0 or 1
  // = no expert parallelism. Must divide W.
  int64_t expert = 0;

  template <class V>
  void visit(V& v) {
    v("data", data, Range{0, 1 << 16});
    v("expert", expert, Range{0, 1 << 16});
  }
};

struct OutputConfig {
  std::string dir = "runs";

  template <class V>
  void visit(V& v) {
    v("dir", dir, NoCheck{});
  }
};

struct Config {
  std::string kind = "pretrain";  // the experiment kind that runs it (experiments/kinds.cpp lists them)
  std::string name = "run";       // the run's folder under output.dir (a PathName)
  std::string description;
  // Printed after a run's report: what to try next ("{run}" becomes the run's folder).
  std::string next_steps;
  int64_t seed = 1234;
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
  PrecisionConfig precision;
  OutputConfig output;
  DistConfig dist;
  PipelineConfig pipeline;
  ParallelConfig parallel;
  Fp8AccumulationConfig fp8_accumulation;
  DecodeBenchConfig decode_bench;
  SpecBenchConfig spec_bench;
  GenerateConfig generate;
  TaskConfig task;
  GrpoConfig grpo;

  template <class V>
  void visit(V& v) {
    v("kind", kind, NoCheck{});  // checked against the registered kinds (run/kinds.h) before a run
    v("name", name, PathName{});
    v("description", description, NoCheck{});
    v("next_steps", next_steps, NoCheck{});
    v("seed", seed, Range{0, 1e15});
    v.section("data", data);
    v.section("model", model);
    v.section("train", train);
    v.section("precision", precision);
    v.section("output", output);
    v.section("dist", dist);
    v.section("pipeline", pipeline);
    v.section("parallel", parallel);
    v.section("fp8_accumulation", fp8_accumulation);
    v.section("decode_bench", decode_bench);
    v.section("spec_bench", spec_bench);
    v.section("generate", generate);
    v.section("task", task);
    v.section("grpo", grpo);
  }
};

// One named variant of an experiment, fully resolved.
struct Variant {
  std::string name;  // "default" when the config declares no variants
  Config config;
  // Where each key the config sets came from: "file:line", "file:line (variant 'x')" or
  // "--set a.b=c". Keys left at their defaults are absent.
  std::map<std::string, std::string> origins;
  std::string file;  // the YAML file

  // The origin of `key` (or of its nearest section that has one), else the file.
  std::string where(const std::string& key) const;
  // "<where of the first key set>: <e.what()>", as a ConfigError.
  ConfigError locate(const InvalidKeys& e) const;
};

struct Experiment {
  std::string path;               // the YAML file
  std::vector<Variant> variants;  // in file order
};

// Loads `path`, applies each variant's overrides, then `sets` ("a.b=c", applied last, to every
// variant), and parses every variant strictly. Throws ConfigError (one line) on any problem.
Experiment load_experiment(const std::string& path, const std::vector<std::string>& sets);

// Parses a config from YAML text (for tests and tools); `origin` names it in errors.
Config parse_config(const std::string& yaml_text, const std::string& origin = "<string>");

// The resolved config as YAML (every field, defaults included).
std::string to_yaml(const Config& c);

// Every field of the resolved config as "a.b.c" -> its value's YAML text (sequences in flow style).
std::map<std::string, std::string> flat_values(const Config& c);

// Edit distance, for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace ts::config
