// torch.classes.tinyseek.Model: the C++ transformer as a TorchScript custom class, so Python drives
// the one model implementation (python/tinyseek/model.py wraps it as a torch.nn.Module). The
// tensors it hands out are the model's own (parameters and buffers, not copies): an optimizer in
// Python updates what the C++ forward computes with, and autograd runs through the C++ forward.
#include <torch/custom_class.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "csrc/config/config.h"
#include "csrc/nn/attention/mla.h"
#include "csrc/nn/generate.h"
#include "csrc/nn/layers.h"
#include "csrc/nn/linear.h"
#include "csrc/nn/model_config.h"
#include "csrc/nn/moe.h"
#include "csrc/nn/moe_router.h"
#include "csrc/rl/tasks.h"
#include "csrc/train/hf.h"
#include "csrc/train/trained_run.h"

namespace ts::python {

namespace {

struct Model : torch::CustomClassHolder {
  config::Config cfg;
  nn::Transformer model{nullptr};
  std::string source;

  // source "run": text is RUN_DIR[/VARIANT] or hf:DIR (step < 0: the latest checkpoint);
  // source "config": text is a YAML config whose model section is built, randomly initialised
  // from its seed.
  Model(const std::string& kind, const std::string& text, int64_t step) {
    if (kind == "run") {
      const auto run = train::resolve_run({text, step});
      cfg = run.config;
      model = train::load_model(run);
      source = run.hf ? text : run.dir.string();
    } else if (kind == "config") {
      cfg = config::parse_config(text, "<tinyseek.Model config>");
      nn::check_model_config(cfg);
      torch::manual_seed(static_cast<uint64_t>(cfg.seed));
      model = nn::Transformer(cfg);
      source = "config";
    } else {
      throw config::ConfigError("tinyseek.Model: source must be 'run' or 'config', got '" + kind + "'");
    }
    model->eval();
  }

  torch::nn::Module& module() { return *model; }

  void check_tokens(const torch::Tensor& tokens) const {
    TORCH_CHECK(tokens.dim() == 2, "tinyseek.Model: tokens must be [batch, time], got ", tokens.dim(), " dims");
    TORCH_CHECK(tokens.scalar_type() == torch::kLong, "tinyseek.Model: tokens must be int64, got ",
                tokens.scalar_type());
    TORCH_CHECK(tokens.size(1) >= 1 && tokens.size(1) <= model->max_seq_len(), "tinyseek.Model: ", tokens.size(1),
                " tokens per sequence; the model takes 1..", model->max_seq_len(), " (data.seq_len)");
    if (tokens.numel() > 0) {
      const auto lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < cfg.model.vocab_size, "tinyseek.Model: token ids must be in [0, ",
                  cfg.model.vocab_size, "), got ", lo < 0 ? lo : hi);
    }
  }

  torch::Tensor forward(const torch::Tensor& tokens) {
    check_tokens(tokens);
    return model->forward(tokens);
  }

  // [main logits, depth-1 logits, ...] (the MTP depths' logits, [B, T-k, V]).
  std::vector<torch::Tensor> forward_mtp(const torch::Tensor& tokens) {
    check_tokens(tokens);
    auto out = model->forward_outputs(tokens);
    std::vector<torch::Tensor> all{out.logits};
    for (auto& t : out.mtp_logits) all.push_back(t);
    return all;
  }

  // The MoE balance losses of the last training-mode forward (0 when none).
  torch::Tensor aux_loss() const {
    auto a = model->aux_loss();
    return a.defined() ? a : torch::zeros({}, torch::kFloat);
  }

  std::vector<std::vector<int64_t>> generate(const std::vector<std::vector<int64_t>>& prompts, int64_t max_new_tokens,
                                             double temperature, int64_t top_k, double top_p, int64_t seed,
                                             bool speculative) {
    TORCH_CHECK(!prompts.empty(), "tinyseek.Model.generate: no prompts");
    TORCH_CHECK(seed >= 0, "tinyseek.Model.generate: seed must be >= 0, got ", seed);
    nn::GenerateOptions o;
    o.max_new_tokens = max_new_tokens;
    o.sampling.temperature = temperature;
    o.sampling.top_k = top_k;
    o.sampling.top_p = top_p;
    o.speculative = speculative;
    o.block_size = cfg.generate.block_size;
    std::vector<nn::GenerateRequest> reqs;
    for (size_t i = 0; i < prompts.size(); ++i) reqs.push_back({prompts[i], static_cast<uint64_t>(seed) + i});
    const bool was_training = model->is_training();
    model->eval();
    torch::NoGradGuard ng;
    auto res = nn::generate(model, reqs, o);
    model->train(was_training);
    std::vector<std::vector<int64_t>> out;
    for (auto& c : res.completions) out.push_back(std::move(c.tokens));
    return out;
  }

  void export_hf(const std::string& out) { train::export_hf(*model, cfg, out, {{"run", source}}); }
};

// torch.classes.tinyseek.MoELayer: the C++ DeepSeekMoE layer (csrc/nn/moe.h) built from a config's
// model section (d_model, init_std, moe.*, precision), for tinyseek.nn.MoE. Initialised from
// torch's default generator (the one Python's torch.manual_seed sets).
struct MoELayer : torch::CustomClassHolder {
  config::Config cfg;
  nn::MoE moe{nullptr};

  explicit MoELayer(const std::string& yaml) {
    cfg = config::parse_config(yaml, "<tinyseek.nn.MoE>");
    nn::validate_moe_config(cfg.model.moe);
    moe = nn::MoE(cfg);
  }

  torch::nn::Module& module() { return *moe; }
  // The routing of tokens h [T, C] as the layer's forward computes it: (topk_ids, topk_weights, scores).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> route(const torch::Tensor& h) const {
    TORCH_CHECK(h.dim() == 2 && h.size(1) == cfg.model.d_model, "tinyseek.nn.MoE.route: h must be [T, ",
                cfg.model.d_model, "], got ", h.sizes());
    auto r = nn::route(torch::matmul(h.to(torch::kFloat), moe->router.t()),
                       cfg.model.moe.loss_free ? moe->expert_bias : torch::Tensor(), cfg.model.moe);
    return {r.topk_ids, r.topk_weights, r.scores};
  }
};

// torch.classes.tinyseek.AttentionLayer: one C++ attention module (make_attention: MHA/GQA/MQA or
// MLA) with rotary tables for data.seq_len positions, for tinyseek.nn's attention modules.
struct AttentionLayer : torch::CustomClassHolder {
  config::Config cfg;
  std::shared_ptr<nn::AttentionImpl> attn;
  nn::Rope rope;

  explicit AttentionLayer(const std::string& yaml) {
    cfg = config::parse_config(yaml, "<tinyseek.nn attention>");
    nn::check_model_config(cfg);
    attn = nn::make_attention(cfg);
    rope = nn::Rope::make(attn->rope_dim(), nn::model_context(cfg), cfg.model.rope_theta, torch::kCPU);
  }
  torch::nn::Module& module() { return *attn; }
  nn::MultiHeadLatentAttentionImpl& mla() const {
    auto* m = dynamic_cast<nn::MultiHeadLatentAttentionImpl*>(attn.get());
    TORCH_CHECK(m, "decode: only multi-head latent attention decodes over a paged latent cache");
    return *m;
  }
};

// torch.classes.tinyseek.LinearLayer: the C++ projection ts::nn::Linear in a config's precision
// (precision.kind fp8 with its recipe and accumulator knobs), for tinyseek.nn.FP8Linear.
struct LinearLayer : torch::CustomClassHolder {
  nn::Linear lin{nullptr};
  LinearLayer(int64_t in, int64_t out, const std::string& precision_yaml) {
    const auto cfg = config::parse_config(precision_yaml, "<tinyseek.nn.FP8Linear>");
    nn::check_precision_config(cfg.precision);
    lin = nn::Linear(in, out, cfg.precision);
  }
  torch::nn::Module& module() { return *lin; }
};

// A module's parameters or buffers: their names, and the tensors themselves (not copies: Python
// registers them as its own, python/tinyseek/model.py _register).
std::vector<std::string> names_of(torch::nn::Module& m, bool buffers) {
  std::vector<std::string> out;
  for (const auto& t : buffers ? m.named_buffers() : m.named_parameters()) out.push_back(t.key());
  return out;
}
std::vector<torch::Tensor> tensors_of(torch::nn::Module& m, bool buffers) {
  std::vector<torch::Tensor> out;
  for (const auto& t : buffers ? m.named_buffers() : m.named_parameters()) out.push_back(t.value());
  return out;
}

// torch.classes.tinyseek.<name> with what every class here has: parameter_names, parameters,
// buffer_names, buffers and set_training over T::module().
template <class T>
torch::class_<T> module_class(const std::string& name) {
  using P = c10::intrusive_ptr<T>;
  torch::class_<T> c("tinyseek", name);
  c.def("parameter_names", [](const P& m) { return names_of(m->module(), false); })
      .def("parameters", [](const P& m) { return tensors_of(m->module(), false); })
      .def("buffer_names", [](const P& m) { return names_of(m->module(), true); })
      .def("buffers", [](const P& m) { return tensors_of(m->module(), true); })
      .def("set_training", [](const P& m, bool on) { m->module().train(on); });
  return c;
}

// torch::init of T from its constructor's arguments; a config error leaves as ValueError.
template <class T, class... Args>
auto config_init() {
  return torch::init([](Args... args) {
    try {
      return c10::make_intrusive<T>(args...);
    } catch (const config::ConfigError& e) {
      TORCH_CHECK_VALUE(false, e.what());
    }
  });
}

// Exceptions leave as RuntimeError with the message alone (config errors name the key).
template <class F>
auto guarded(F f) {
  return [f](auto&&... args) {
    try {
      return f(std::forward<decltype(args)>(args)...);
    } catch (const config::ConfigError& e) {
      TORCH_CHECK(false, e.what());
    }
  };
}

const auto registration =
    module_class<Model>("Model")
        .def(torch::init([](const std::string& kind, const std::string& text, int64_t step) {
          try {
            return c10::make_intrusive<Model>(kind, text, step);
          } catch (const config::ConfigError& e) {
            TORCH_CHECK(false, e.what());
          }
        }))
        .def("forward", [](const c10::intrusive_ptr<Model>& m, const torch::Tensor& t) { return m->forward(t); })
        .def("forward_mtp",
             [](const c10::intrusive_ptr<Model>& m, const torch::Tensor& t) { return m->forward_mtp(t); })
        .def("aux_loss", [](const c10::intrusive_ptr<Model>& m) { return m->aux_loss(); })
        .def("after_optimizer_step", [](const c10::intrusive_ptr<Model>& m) { m->model->after_optimizer_step(); })
        .def("to_device",
             [](const c10::intrusive_ptr<Model>& m, const std::string& d) { m->model->to(torch::Device(d)); })
        .def("config_yaml", [](const c10::intrusive_ptr<Model>& m) { return config::to_yaml(m->cfg); })
        .def("mtp_depth", [](const c10::intrusive_ptr<Model>& m) { return m->model->mtp_depth(); })
        .def("max_seq_len", [](const c10::intrusive_ptr<Model>& m) { return m->model->max_seq_len(); })
        .def("vocab_size", [](const c10::intrusive_ptr<Model>& m) { return m->cfg.model.vocab_size; })
        .def("mtp_loss_weight",
             [](const c10::intrusive_ptr<Model>& m, int64_t step) { return m->model->mtp_loss_weight(step); })
        .def("generate",
             [](const c10::intrusive_ptr<Model>& m, const std::vector<std::vector<int64_t>>& prompts, int64_t max_new,
                double temperature, int64_t top_k, double top_p, int64_t seed, bool speculative) {
               return guarded(
                   [&] { return m->generate(prompts, max_new, temperature, top_k, top_p, seed, speculative); })();
             })
        .def("export_hf",
             [](const c10::intrusive_ptr<Model>& m, const std::string& out) { guarded([&] { m->export_hf(out); })(); });

using MoEPtr = c10::intrusive_ptr<MoELayer>;
const auto moe_registration =
    module_class<MoELayer>("MoELayer")
        .def(config_init<MoELayer, std::string>())
        .def("forward", [](const MoEPtr& m, const torch::Tensor& x) { return m->moe->forward(x); })
        .def("route", [](const MoEPtr& m, const torch::Tensor& h) { return m->route(h); })
        .def("aux_loss",
             [](const MoEPtr& m) -> std::optional<torch::Tensor> {
               const auto& a = m->moe->aux_loss();
               return a.defined() ? std::optional<torch::Tensor>(a) : std::nullopt;
             })
        .def("step_load",
             [](const MoEPtr& m) -> std::optional<torch::Tensor> {
               const auto& l = m->moe->step_load();
               return l.defined() ? std::optional<torch::Tensor>(l.clone()) : std::nullopt;
             })
        .def("update_bias", [](const MoEPtr& m) { m->moe->update_bias(); })
        .def("take_load", [](const MoEPtr& m) {
          auto l = m->moe->take_load();
          auto tokens = l.tokens.defined() ? l.tokens : torch::zeros({m->cfg.model.moe.n_routed_experts}, torch::kLong);
          return std::make_tuple(tokens, l.dropped);
        });

using LinPtr = c10::intrusive_ptr<LinearLayer>;
const auto linear_registration =
    module_class<LinearLayer>("LinearLayer")
        .def(config_init<LinearLayer, int64_t, int64_t, std::string>())
        .def("forward", [](const LinPtr& m, const torch::Tensor& x) { return m->lin->forward(x); });

using AttnPtr = c10::intrusive_ptr<AttentionLayer>;
const auto attention_registration =
    module_class<AttentionLayer>("AttentionLayer")
        .def(config_init<AttentionLayer, std::string>())
        .def("forward",
             [](const AttnPtr& m, const torch::Tensor& x) {
               TORCH_CHECK(x.dim() == 3 && x.size(1) <= m->rope.cos.size(0),
                           "attention: x must be [B, T, C] with T <= ", m->rope.cos.size(0), " (max_len)");
               return m->attn->forward(x, m->rope);
             })
        .def("decode",
             [](const AttnPtr& m, const torch::Tensor& x, const torch::Tensor& cache, const torch::Tensor& table,
                const torch::Tensor& lens) {
               auto [y, n] = m->mla().decode_paged(x, m->rope, cache, table, lens);
               return std::make_tuple(y, n);
             })
        .def("kv_cache_values_per_token", [](const AttnPtr& m) { return m->attn->kv_cache_values_per_token(); });

}  // namespace

// The GRPO trainer's format reward (csrc/rl/tasks.h) for Python callers, such as a reward function
// handed to another trainer (benchmarks/peer_grpo.py): one implementation of the rule.
TORCH_LIBRARY_FRAGMENT(tinyseek, m) {
  m.def("format_reward(str[] completions) -> float[]", [](const std::vector<std::string>& completions) {
    std::vector<double> out;
    out.reserve(completions.size());
    for (const auto& c : completions) out.push_back(rl::format_reward(c));
    return out;
  });
  // Whether the C++ models run the fused kernels (csrc/nn/layers.h; train.fused for runs): the
  // previous setting is returned.
  m.def("set_fused_kernels(bool on) -> bool", [](bool on) {
    const bool was = nn::fused_kernels();
    nn::set_fused_kernels(on);
    return was;
  });
}

}  // namespace ts::python
