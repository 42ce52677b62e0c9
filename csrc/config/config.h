// Typed configuration: one struct per area, each with a visit() that lists its fields once.
// The same description drives parsing (strict, with file:line errors), printing
// (config.resolved.yaml) and --set overrides. New technique keys are added here as fields (the
// model and training sections) or in run_sections.h (studies, generation, GRPO, multi-process).
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "csrc/config/fields.h"
#include "csrc/config/run_sections.h"

namespace YAML {
class Node;
}

namespace ts::config {

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
  // The fused kernels: AdamW in one pass per parameter with the clipping folded in, and the
  // models' fused SwiGLU. false runs the unfused torch composition they replace (same math,
  // fp32 rounding differs), for comparison.
  bool fused = true;
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
    v("fused", fused, NoCheck{});
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
