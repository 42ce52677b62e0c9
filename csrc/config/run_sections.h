// The config sections of what runs around training: the studies' measurements, generation,
// tasks and GRPO, and multi-process jobs (process groups, pipeline, data and expert
// parallelism). Part of config::Config (csrc/config/config.h), which holds the model and
// training sections.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "csrc/config/fields.h"

namespace ts::config {

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
  int64_t repeats = 3;      // timed calls of each kind per batch, alternating; the fastest counts

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

}  // namespace ts::config
