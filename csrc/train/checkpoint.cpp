#include "csrc/train/checkpoint.h"
#include "csrc/util/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "csrc/config/config.h"
#include "csrc/train/safetensors_format.h"

namespace ts::train {

namespace {

const std::map<torch::ScalarType, std::string>& dtype_names() {
  static const std::map<torch::ScalarType, std::string> m = {{torch::kFloat, "F32"},
                                                             {torch::kDouble, "F64"},
                                                             {torch::kHalf, "F16"},
                                                             {torch::kBFloat16, "BF16"},
                                                             {torch::kLong, "I64"},
                                                             {torch::kInt, "I32"},
                                                             {torch::kShort, "I16"},
                                                             {torch::kChar, "I8"},
                                                             {torch::kByte, "U8"},
                                                             {torch::kBool, "BOOL"},
                                                             {torch::kFloat8_e4m3fn, "F8_E4M3"},
                                                             {torch::kFloat8_e5m2, "F8_E5M2"}};
  return m;
}

}  // namespace

std::string safetensors_serialize(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    auto it = dtype_names().find(t.scalar_type());
    TORCH_CHECK(it != dtype_names().end(), "safetensors: tensor '", name, "' has unsupported dtype ", t.scalar_type());
    auto c = t.detach().to(torch::kCPU).contiguous();
    const size_t n = c.numel() * c.element_size();
    header[name] = {{"dtype", it->second}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    data.push_back(c);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // the format allows padding the header to align the data
  std::string out(8, '\0');
  uint64_t hs = h.size();
  std::memcpy(out.data(), &hs, 8);  // little-endian on every platform tinyseek builds for
  out += h;
  out.reserve(out.size() + offset);
  for (const auto& c : data) out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  return out;
}

std::map<std::string, torch::Tensor> safetensors_load(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "safetensors: cannot read ", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string buf = ss.str();
  SafetensorsHeader header;
  try {
    header = parse_safetensors(buf, path.string());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, e.what());
  }
  std::map<std::string, torch::ScalarType> by_name;
  for (const auto& [k, v] : dtype_names()) by_name[v] = k;
  std::map<std::string, torch::Tensor> out;
  const char* base = buf.data() + header.data_start;
  for (const auto& e : header.tensors) {
    auto dt = by_name.find(e.dtype);
    TORCH_CHECK(dt != by_name.end(), "safetensors: ", path.string(), ": '", e.name, "' has dtype ", e.dtype,
                ", which tinyseek does not load");
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(dt->second));
    std::memcpy(t.data_ptr(), base + e.begin, e.end - e.begin);  // parse_safetensors checked the sizes
    out[e.name] = t;
  }
  return out;
}

namespace {

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

constexpr const char* kManifest = "manifest.json";

// CRC-32 (zlib's): it catches the accidental damage a manifest guards against (flipped bytes,
// truncation); tampering is out of scope.
std::string crc32_hex(const std::string& bytes) {
  const auto crc = crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size());
  return fmt::format("{:08x}", static_cast<uint32_t>(crc));
}

std::optional<std::string> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::pair<std::string, torch::Tensor>> model_tensors(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

}  // namespace

namespace {

std::string shard_file(int64_t g, const char* what) { return fmt::format("shard{}.{}.safetensors", g, what); }

// Atomically writes `files` into step folder `dir` with state.json and, last, the manifest.
void write_manifest(const fs::path& dir, int64_t step, const std::vector<std::pair<std::string, std::string>>& files) {
  nlohmann::json manifest = {{"step", step}, {"files", nlohmann::json::object()}};
  for (const auto& [name, bytes] : files)
    manifest["files"][name] = {{"bytes", bytes.size()}, {"crc32", crc32_hex(bytes)}};
  util::atomic_write(dir / kManifest, manifest.dump(2) + "\n");  // last: the folder is complete
}

// Makes tmp_dir the step folder root/step_XXXXXXXX, points root/latest at it and keeps the newest `keep`.
void publish(const fs::path& root, const fs::path& tmp_dir, int64_t step, int keep) {
  const fs::path final_dir = root / step_name(step);
  ts::util::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  util::fsync_path(root, /*directory=*/true);
  util::atomic_write(root / "latest", step_name(step) + "\n");
  // Retention: the newest `keep` step folders stay. A folder leaves by a rename first, so a kill
  // during the removal leaves a .trash_ folder (swept below next time), never a half step folder;
  // so do the temp folders and files of saves that were killed.
  std::vector<fs::path> steps, leftovers;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.starts_with("step_")) steps.push_back(e.path());
    if (n.starts_with(".trash_") || n.starts_with(".tmp_step_") || n.starts_with("latest.tmp."))
      leftovers.push_back(e.path());
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + keep < steps.size(); ++i) {
    const fs::path trash = root / (".trash_" + steps[i].filename().string());
    ts::util::remove_all(trash);
    fs::rename(steps[i], trash);
    leftovers.push_back(trash);
  }
  for (const auto& p : leftovers) ts::util::remove_all(p);
}

std::map<const void*, std::string> parameter_names(torch::nn::Module& model) {
  std::map<const void*, std::string> out;
  for (const auto& p : model.named_parameters()) out[p.value().unsafeGetTensorImpl()] = p.key();
  return out;
}

// The whole tensors of a sharded checkpoint's `what` files: a tensor several shards hold (a split
// one) is their slices concatenated along dim 0 in shard order.
std::map<std::string, torch::Tensor> load_shards(const fs::path& dir, const nlohmann::json& shards, const char* what) {
  const int64_t S = shards.at("count").get<int64_t>();
  std::map<std::string, std::vector<torch::Tensor>> parts;
  for (int64_t g = 0; g < S; ++g)
    for (auto& [name, t] : safetensors_load(dir / shard_file(g, what))) parts[name].push_back(t);
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, v] : parts) out[name] = v.size() > 1 && v[0].dim() > 0 ? torch::cat(v, 0) : v[0];
  return out;
}

// This process's part of a whole checkpoint tensor for `local` (the same shape, or slice `shard`
// of dim 0 for a split tensor).
torch::Tensor local_part(const torch::Tensor& whole, const torch::Tensor& local, int shard, const std::string& what) {
  if (whole.sizes() == local.sizes()) return whole;
  const bool sliceable = whole.dim() == local.dim() && whole.dim() > 0 && local.size(0) > 0 &&
                         whole.size(0) % local.size(0) == 0 && (shard + 1) * local.size(0) <= whole.size(0) &&
                         whole.sizes().slice(1) == local.sizes().slice(1);
  TORCH_CHECK(sliceable, "checkpoint: '", what, "' has shape ", whole.sizes(), ", and this process holds ",
              local.sizes(), " (slice ", shard, "): written by a different model config?");
  return whole.narrow(0, shard * local.size(0), local.size(0));
}

nlohmann::json read_json_file(const fs::path& p) {
  std::ifstream in(p);
  TORCH_CHECK(in, "checkpoint: cannot read ", p.string());
  return nlohmann::json::parse(in);
}

// Loads a verified sharded checkpoint's weights (prefix as in load_weights) and, with opt, the
// AdamW state and the CPU RNG, into slice `shard`.
void load_sharded(const fs::path& dir, torch::nn::Module& model, const std::string& prefix,
                  torch::optim::Optimizer* opt, int shard) {
  const auto state = read_json_file(dir / "state.json");
  TORCH_CHECK(state.contains("shards"), "checkpoint ", dir.string(), ": state.json lacks \"shards\"");
  const auto& shards = state["shards"];
  {
    auto weights = load_shards(dir, shards, "model");
    torch::NoGradGuard ng;
    for (auto& [name, t] : model_tensors(model)) {
      auto it = weights.find(prefix + name);
      TORCH_CHECK(it != weights.end(), "checkpoint ", dir.string(), " lacks tensor '", prefix + name,
                  "' (was it written by a different model config?)");
      t.copy_(local_part(it->second, t, shard, prefix + name));
    }
  }
  if (!opt) return;
  auto* adamw = dynamic_cast<torch::optim::AdamW*>(opt);
  TORCH_CHECK(adamw, "checkpoint: sharded optimizer state is AdamW's");
  auto st = load_shards(dir, shards, "optim");
  const auto names = parameter_names(model);
  for (auto& group : adamw->param_groups())
    for (auto& p : group.params()) {
      const auto& name = names.at(p.unsafeGetTensorImpl());
      auto step = st.find("step/" + name);
      if (step == st.end()) continue;  // no update yet when saved
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      s->step(step->second.item<int64_t>());
      s->exp_avg(local_part(st.at("exp_avg/" + name), p, shard, "exp_avg/" + name).clone().to(p.device()));
      s->exp_avg_sq(local_part(st.at("exp_avg_sq/" + name), p, shard, "exp_avg_sq/" + name).clone().to(p.device()));
      adamw->state()[p.unsafeGetTensorImpl()] = std::move(s);
    }
  auto gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(st.at("rng_cpu"));
}

}  // namespace

void save_checkpoint(const fs::path& root, int64_t step, torch::nn::Module& model, torch::optim::Optimizer& opt,
                     const nlohmann::json& state, int keep) {
  const fs::path tmp_dir = root / (".tmp_" + step_name(step));
  ts::util::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  std::vector<std::pair<std::string, std::string>> files;
  files.emplace_back("model.safetensors", safetensors_serialize(model_tensors(model), {{"format", "pt"}}));
  {
    torch::serialize::OutputArchive ar;
    opt.save(ar);
    ar.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
    std::ostringstream os;
    ar.save_to(os);
    files.emplace_back("trainer_state.pt", os.str());
  }
  nlohmann::json st = state;
  st["step"] = step;
  files.emplace_back("state.json", st.dump(2) + "\n");
  for (const auto& [name, bytes] : files) util::atomic_write(tmp_dir / name, bytes);
  write_manifest(tmp_dir, step, files);
  publish(root, tmp_dir, step, keep);
}

void save_sharded_checkpoint(const fs::path& root, int64_t step, torch::nn::Module& model, torch::optim::AdamW& opt,
                             const nlohmann::json& state, const ShardLayout& layout,
                             const std::function<void()>& barrier, int keep) {
  const fs::path tmp_dir = root / (".tmp_" + step_name(step));
  barrier();
  if (layout.rank == 0) {
    ts::util::remove_all(tmp_dir);
    fs::create_directories(tmp_dir);
  }
  barrier();
  if (layout.rank < layout.shards) {
    const std::set<std::string> split(layout.split.begin(), layout.split.end());
    const bool lead = layout.rank == 0;
    std::vector<std::pair<std::string, torch::Tensor>> weights, optim;
    for (auto& [name, t] : model_tensors(model))
      if (lead || split.count(name)) weights.emplace_back(name, t);
    const auto names = parameter_names(model);
    for (auto& group : opt.param_groups())
      for (auto& p : group.params()) {
        const auto& name = names.at(p.unsafeGetTensorImpl());
        auto it = opt.state().find(p.unsafeGetTensorImpl());
        if ((!lead && !split.count(name)) || it == opt.state().end()) continue;
        auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
        optim.emplace_back("exp_avg/" + name, s.exp_avg());
        optim.emplace_back("exp_avg_sq/" + name, s.exp_avg_sq());
        optim.emplace_back("step/" + name, torch::tensor(s.step(), torch::kLong));
      }
    if (lead) optim.emplace_back("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
    util::atomic_write(tmp_dir / shard_file(layout.rank, "model"), safetensors_serialize(weights, {{"format", "pt"}}));
    util::atomic_write(tmp_dir / shard_file(layout.rank, "optim"), safetensors_serialize(optim));
  }
  barrier();
  if (layout.rank == 0) {
    nlohmann::json st = state;
    st["step"] = step;
    st["shards"] = {{"count", layout.shards}, {"split", layout.split}};
    std::vector<std::pair<std::string, std::string>> files;
    for (int g = 0; g < layout.shards; ++g)
      for (const char* what : {"model", "optim"}) {
        const std::string name = shard_file(g, what);
        auto bytes = read_file(tmp_dir / name);
        TORCH_CHECK(bytes, "checkpoint: rank ", g, " did not write ", (tmp_dir / name).string());
        files.emplace_back(name, std::move(*bytes));
      }
    files.emplace_back("state.json", st.dump(2) + "\n");
    util::atomic_write(tmp_dir / "state.json", files.back().second);
    write_manifest(tmp_dir, step, files);
    publish(root, tmp_dir, step, keep);
  }
  barrier();
}

bool is_sharded_checkpoint(const fs::path& step_dir) {
  const auto text = read_file(step_dir / kManifest);
  if (!text) return false;
  const auto m = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  return !m.is_discarded() && m.contains("files") && m["files"].is_object() &&
         m["files"].contains(shard_file(0, "model"));
}

std::string checkpoint_damage(const fs::path& step_dir, const std::vector<std::string>& files) {
  const auto text = read_file(step_dir / kManifest);
  if (!text)
    return fmt::format("{}: missing (the checkpoint is incomplete, or older than checkpoint manifests)",
                       (step_dir / kManifest).string());
  const auto manifest = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.contains("files") || !manifest["files"].is_object())
    return fmt::format("{}: damaged (not a manifest)", (step_dir / kManifest).string());
  std::vector<std::string> names = files;
  if (names.empty())
    for (const auto& [name, _] : manifest["files"].items()) names.push_back(name);
  for (const auto& name : names) {
    const fs::path p = step_dir / name;
    const auto& entry = manifest["files"].value(name, nlohmann::json());
    if (!entry.is_object() || !entry.contains("bytes") || !entry.contains("crc32"))
      return fmt::format("{}: not in the manifest", p.string());
    const auto bytes = read_file(p);
    if (!bytes) return fmt::format("{}: missing", p.string());
    const auto want = entry["bytes"].get<uint64_t>();
    if (bytes->size() != want)
      return fmt::format("{}: {} bytes, the manifest records {} (truncated or overwritten)", p.string(), bytes->size(),
                         want);
    if (crc32_hex(*bytes) != entry["crc32"].get<std::string>())
      return fmt::format("{}: CRC-32 {} differs from the manifest's {} (the file is damaged)", p.string(),
                         crc32_hex(*bytes), entry["crc32"].get<std::string>());
  }
  return "";
}

namespace {

// load_weights after the checkpoint was verified (by the caller).
void load_verified_weights(const fs::path& step_dir, torch::nn::Module& model, const std::string& prefix) {
  if (is_sharded_checkpoint(step_dir)) return load_sharded(step_dir, model, prefix, nullptr, 0);
  auto tensors = safetensors_load(step_dir / "model.safetensors");
  torch::NoGradGuard ng;
  for (auto& [name, t] : model_tensors(model)) {
    const std::string key = prefix + name;
    auto it = tensors.find(key);
    TORCH_CHECK(it != tensors.end(), "checkpoint ", step_dir.string(), " lacks tensor '", key,
                "' (was it written by a different model config?)");
    TORCH_CHECK(it->second.sizes() == t.sizes(), "checkpoint ", step_dir.string(), ": '", key, "' has shape ",
                it->second.sizes(), ", the model expects ", t.sizes());
    t.copy_(it->second);
  }
}

}  // namespace

void load_weights(const fs::path& step_dir, torch::nn::Module& model, const std::string& prefix) {
  std::vector<std::string> files = {"model.safetensors"};
  if (is_sharded_checkpoint(step_dir)) {  // every shard's weights, and state.json for the layout
    const int64_t S = read_json_file(step_dir / "state.json").at("shards").at("count").get<int64_t>();
    files = {"state.json"};
    for (int64_t g = 0; g < S; ++g) files.push_back(shard_file(g, "model"));
  }
  if (auto damage = checkpoint_damage(step_dir, files); !damage.empty())
    throw config::ConfigError("checkpoint " + damage);
  load_verified_weights(step_dir, model, prefix);
}

std::vector<int64_t> checkpoint_steps(const fs::path& root) {
  std::vector<int64_t> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (!e.is_directory() || !n.starts_with("step_") || n.size() != 13) continue;
    if (n.find_first_not_of("0123456789", 5) != std::string::npos) continue;
    out.push_back(std::stoll(n.substr(5)));
  }
  std::sort(out.begin(), out.end());
  return out;
}

fs::path checkpoint_dir(const fs::path& root, int64_t step) { return root / step_name(step); }

std::optional<int64_t> latest_checkpoint_step(const fs::path& root) {
  std::ifstream latest(root / "latest");
  if (!latest) return std::nullopt;
  std::string name;
  latest >> name;
  if (name.size() != 13 || !name.starts_with("step_") || name.find_first_not_of("0123456789", 5) != std::string::npos)
    throw std::runtime_error("checkpoint: " + (root / "latest").string() + " names '" + name + "', not a step folder");
  return std::stoll(name.substr(5));
}

std::optional<CheckpointInfo> load_latest_checkpoint(const fs::path& root, torch::nn::Module& model,
                                                     torch::optim::Optimizer& opt, const ShardLayout& layout) {
  // Newest first; the one root/latest names is normally the newest (a newer complete folder
  // exists only when a save was cut short between its rename and the update of latest).
  auto steps = checkpoint_steps(root);
  std::error_code ec;
  if (steps.empty() && !fs::exists(root / "latest", ec)) return std::nullopt;
  std::string skipped;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const fs::path dir = checkpoint_dir(root, *it);
    if (auto damage = checkpoint_damage(dir); !damage.empty()) {
      skipped += (skipped.empty() ? "" : "; ") + damage;
      continue;
    }
    CheckpointInfo info;
    info.dir = dir;
    if (!skipped.empty())
      info.fallback = fmt::format("skipped damaged checkpoints ({}); resuming from {}", skipped, dir.string());
    // checkpoint_damage read every file above
    if (is_sharded_checkpoint(dir)) {
      load_sharded(dir, model, "", &opt, layout.shard);
    } else {
      if (layout.shards > 1)
        throw config::ConfigError(fmt::format(
            "checkpoint {} was written by one process; an expert-parallel run ({} shards) resumes only from a "
            "multi-rank checkpoint (its optimizer state is stored by name); resume it on one process, or start anew",
            dir.string(), layout.shards));
      load_verified_weights(info.dir, model, "");
      torch::serialize::InputArchive ar;
      ar.load_from((info.dir / "trainer_state.pt").string());
      opt.load(ar);
      torch::Tensor rng;
      ar.read("rng_cpu", rng);
      auto gen = at::detail::getDefaultCPUGenerator();
      gen.set_state(rng);
    }
    std::ifstream js(info.dir / "state.json");
    info.state = nlohmann::json::parse(js);
    info.step = info.state.at("step").get<int64_t>();
    return info;
  }
  throw config::ConfigError(fmt::format("no intact checkpoint under {} to resume from{}", root.string(),
                                        skipped.empty() ? " (no step folders)" : ": " + skipped));
}

}  // namespace ts::train
