#include "csrc/train/checkpoint.h"
#include "csrc/util/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace ts::train {

namespace {

void fsync_path(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

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

void atomic_write(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + tmp.string() + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      fs::remove(tmp);
      throw std::runtime_error("cannot write " + tmp.string() + ": " + err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    fs::remove(tmp);
    throw std::runtime_error("cannot flush " + tmp.string() + ": " + std::strerror(errno));
  }
  fs::rename(tmp, path);
  fsync_path(path.parent_path(), true);
}

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
  TORCH_CHECK(buf.size() >= 8, "safetensors: ", path.string(), " is truncated");
  uint64_t hs = 0;
  std::memcpy(&hs, buf.data(), 8);
  TORCH_CHECK(8 + hs <= buf.size(), "safetensors: ", path.string(), " has a header past the end of the file");
  auto header = nlohmann::json::parse(buf.substr(8, hs));
  std::map<std::string, torch::ScalarType> by_name;
  for (const auto& [k, v] : dtype_names()) by_name[v] = k;
  std::map<std::string, torch::Tensor> out;
  const char* base = buf.data() + 8 + hs;
  const size_t data_size = buf.size() - 8 - hs;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    auto dt = by_name.find(info["dtype"].get<std::string>());
    TORCH_CHECK(dt != by_name.end(), "safetensors: ", path.string(), ": '", name, "' has unknown dtype");
    auto shape = info["shape"].get<std::vector<int64_t>>();
    auto offs = info["data_offsets"].get<std::vector<size_t>>();
    TORCH_CHECK(offs.size() == 2 && offs[0] <= offs[1] && offs[1] <= data_size, "safetensors: ", path.string(), ": '",
                name, "' has bad data_offsets");
    auto t = torch::empty(shape, torch::TensorOptions().dtype(dt->second));
    TORCH_CHECK(static_cast<size_t>(t.numel() * t.element_size()) == offs[1] - offs[0], "safetensors: ", path.string(),
                ": '", name, "' size does not match its shape");
    std::memcpy(t.data_ptr(), base + offs[0], offs[1] - offs[0]);
    out[name] = t;
  }
  return out;
}

namespace {

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::vector<std::pair<std::string, torch::Tensor>> model_tensors(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

}  // namespace

void save_checkpoint(const fs::path& root, int64_t step, torch::nn::Module& model, torch::optim::Optimizer& opt,
                     const nlohmann::json& state, int keep) {
  const fs::path final_dir = root / step_name(step);
  const fs::path tmp_dir = root / (".tmp_" + step_name(step));
  ts::util::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  atomic_write(tmp_dir / "model.safetensors", safetensors_serialize(model_tensors(model), {{"format", "pt"}}));
  {
    torch::serialize::OutputArchive ar;
    opt.save(ar);
    ar.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
    std::ostringstream os;
    ar.save_to(os);
    atomic_write(tmp_dir / "trainer_state.pt", os.str());
  }
  nlohmann::json st = state;
  st["step"] = step;
  atomic_write(tmp_dir / "state.json", st.dump(2) + "\n");
  ts::util::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  fsync_path(root, true);
  atomic_write(root / "latest", step_name(step) + "\n");

  // Retention: the newest `keep` step folders stay.
  std::vector<fs::path> steps;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().starts_with("step_")) steps.push_back(e.path());
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + keep < steps.size(); ++i) ts::util::remove_all(steps[i]);
}

std::optional<CheckpointInfo> load_latest_checkpoint(const fs::path& root, torch::nn::Module& model,
                                                     torch::optim::Optimizer& opt) {
  std::ifstream latest(root / "latest");
  if (!latest) return std::nullopt;
  std::string name;
  latest >> name;
  CheckpointInfo info;
  info.dir = root / name;
  TORCH_CHECK(fs::is_directory(info.dir), "checkpoint: ", (root / "latest").string(), " names ", name,
              " which does not exist");
  auto tensors = safetensors_load(info.dir / "model.safetensors");
  torch::NoGradGuard ng;
  for (auto& [key, t] : model_tensors(model)) {
    auto it = tensors.find(key);
    TORCH_CHECK(it != tensors.end(), "checkpoint ", info.dir.string(), " lacks tensor '", key,
                "' (was it written by a different model config?)");
    TORCH_CHECK(it->second.sizes() == t.sizes(), "checkpoint ", info.dir.string(), ": '", key, "' has shape ",
                it->second.sizes(), ", the model expects ", t.sizes());
    t.copy_(it->second);
  }
  torch::serialize::InputArchive ar;
  std::ifstream in(info.dir / "trainer_state.pt", std::ios::binary);
  TORCH_CHECK(in, "checkpoint: cannot read ", (info.dir / "trainer_state.pt").string());
  ar.load_from(in);
  opt.load(ar);
  torch::Tensor rng;
  ar.read("rng_cpu", rng);
  auto gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(rng);
  std::ifstream js(info.dir / "state.json");
  info.state = nlohmann::json::parse(js);
  info.step = info.state.at("step").get<int64_t>();
  return info;
}

}  // namespace ts::train
