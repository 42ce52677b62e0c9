// Checkpoints: weights (and buffers) as safetensors, optimizer and RNG state as a torch archive,
// step and run state as JSON. Every file is written atomically (temp file, fsync, rename), and a
// checkpoint becomes visible only when its folder is complete: a crash mid-write leaves the
// previous checkpoint intact. manifest.json, written last, holds every file's size and CRC-32;
// loading checks them before using anything, so a damaged file (a flipped byte, a truncation, a
// deletion) is reported naming the file instead of being trained on, and resuming falls back to
// the newest intact checkpoint.
#pragma once

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ts::train {

namespace fs = std::filesystem;

// safetensors (https://github.com/huggingface/safetensors format: u64 header size, JSON header,
// raw little-endian data). Tensors are written contiguous, on CPU, in their own dtype.
std::string safetensors_serialize(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});
std::map<std::string, torch::Tensor> safetensors_load(const fs::path& path);

struct CheckpointInfo {
  int64_t step = 0;
  fs::path dir;          // the step folder
  nlohmann::json state;  // state.json
  std::string fallback;  // when newer checkpoints were damaged: one line saying which and why
};

// What is wrong with checkpoint folder step_dir ("" when intact): its manifest missing or
// unreadable, or one of `files` (all of the manifest's when empty) missing, of another size or
// with another CRC-32 than the manifest records. One line naming the file.
std::string checkpoint_damage(const fs::path& step_dir, const std::vector<std::string>& files = {});

// Saves under root/step_XXXXXXXX/ and points root/latest at it; keeps the newest `keep` checkpoints.
void save_checkpoint(const fs::path& root, int64_t step, torch::nn::Module& model, torch::optim::Optimizer& opt,
                     const nlohmann::json& state, int keep = 2);

// Loads the parameters and buffers of checkpoint folder step_dir (root/step_XXXXXXXX) into
// `model`, tensor `name` from the checkpoint's `prefix + name` (a submodule of the saved module);
// throws config::ConfigError when the weights file is damaged (checkpoint_damage), and naming the
// tensor when one is missing or has another shape.
void load_weights(const fs::path& step_dir, torch::nn::Module& model, const std::string& prefix = "");
// The steps of the checkpoint folders under root, ascending; the folder of one; the step root/latest names.
std::vector<int64_t> checkpoint_steps(const fs::path& root);
fs::path checkpoint_dir(const fs::path& root, int64_t step);
std::optional<int64_t> latest_checkpoint_step(const fs::path& root);

// Sharded checkpoints of a multi-rank run (data and expert parallelism). The step folder holds
// shard<g>.model.safetensors and shard<g>.optim.safetensors for g < S, written by the S ranks of
// the first data-parallel replica's expert-parallel group (the other replicas hold copies):
// shard g holds slice g (dim 0) of every tensor split over the experts' owners and, in shard 0,
// every replicated tensor. AdamW's state is stored by parameter name (exp_avg/NAME,
// exp_avg_sq/NAME, step/NAME), so the checkpoint loads into any layout: trained on 4 ranks, it
// resumes on 2 or on 1, and generate, export and tinyseek.load read it as a whole model.
// state.json's "shards" records the layout. Each file is written atomically; the lead rank
// writes state.json and manifest.json last, after every shard, then makes the folder visible.
struct ShardLayout {
  int rank = 0;                    // this process (the lead is 0)
  int shards = 1;                  // S: ranks 0..S-1 write shards 0..S-1
  int shard = 0;                   // this process's slice of the split tensors (its expert-parallel rank)
  std::vector<std::string> split;  // names of the tensors split over the shards (the routed experts)
};
// All ranks call it; `barrier` synchronizes them (called 4 times).
void save_sharded_checkpoint(const fs::path& root, int64_t step, torch::nn::Module& model, torch::optim::AdamW& opt,
                             const nlohmann::json& state, const ShardLayout& layout,
                             const std::function<void()>& barrier, int keep = 2);
// Whether step_dir is a sharded checkpoint (its manifest lists shard files).
bool is_sharded_checkpoint(const fs::path& step_dir);

// Restores model parameters and buffers, optimizer state and the CPU RNG from the newest intact
// checkpoint under root (normally the one root/latest names; a damaged one is skipped and
// CheckpointInfo::fallback says so). Returns nullopt when there is none at all; throws
// config::ConfigError, naming each checkpoint and its damage, when there are some but none is
// intact, and std::runtime_error on a mismatched one.
// A sharded checkpoint loads into `layout`'s slice (default: one process holding every slice);
// a one-process checkpoint into a layout with shards > 1 is refused (config::ConfigError): its
// optimizer state is not stored by name.
std::optional<CheckpointInfo> load_latest_checkpoint(const fs::path& root, torch::nn::Module& model,
                                                     torch::optim::Optimizer& opt, const ShardLayout& layout = {});

}  // namespace ts::train
