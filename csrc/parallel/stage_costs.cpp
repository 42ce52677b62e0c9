#include "csrc/parallel/stage_costs.h"

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>

#include "csrc/parallel/split_backward.h"

namespace ts::parallel {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One unit's forward on a stage, as the executor runs it.
struct Unit1 {
  at::Tensor embed_out, input, output;
};

Unit1 run_forward(nn::Transformer& model, const StageRange& r, const at::Tensor& tokens, const at::Tensor& targets,
                  const at::Tensor& activation) {
  Unit1 u;
  if (r.first) {
    u.embed_out = model->embed_tokens(tokens);
    u.input = u.embed_out.detach().requires_grad_(true);
  } else {
    u.input = activation.detach().clone().requires_grad_(true);
  }
  at::Tensor h = model->run_blocks(u.input, r.begin, r.end);
  u.output = r.last ? model->head_objective(h, tokens, targets, model->mtp_loss_weight(0)) : h;
  return u;
}

at::Tensor root_grad(const Unit1& u, bool last) {
  return last ? torch::ones({}, u.output.options()) : torch::randn_like(u.output);
}

void embedding_backward(const Unit1& u, const at::Tensor& d_input) {
  if (!u.embed_out.defined()) return;
  torch::autograd::Engine::get_default_engine().execute({torch::autograd::impl::gradient_edge(u.embed_out)}, {d_input},
                                                        false, false, true);
}

}  // namespace

std::vector<StageCosts> measure_stage_costs(nn::Transformer& model, const std::vector<StageRange>& stages,
                                            const at::Tensor& tokens, const at::Tensor& targets, int repeats) {
  const int64_t C = model->embed->options.embedding_dim();
  const at::Tensor activation =
      torch::randn({tokens.size(0), tokens.size(1), C}, torch::TensorOptions().device(tokens.device()));
  // Repeats are the outer loop, so a slow spell of a shared machine spreads over every stage
  // instead of inflating one; each median then drops it.
  struct Samples {
    std::vector<double> f, b, w, bw, fb;
  };
  std::vector<Samples> samples(stages.size());
  for (int rep = 0; rep <= repeats; ++rep) {  // rep 0 warms up
    for (size_t si = 0; si < stages.size(); ++si) {
      const StageRange& r = stages[si];
      auto& [f, b, w, bw, fb] = samples[si];
      auto t = Clock::now();
      Unit1 u = run_forward(model, r, tokens, targets, activation);
      const double tf = seconds_since(t);

      SplitBackward split;
      const at::Tensor g = root_grad(u, r.last);
      t = Clock::now();
      const at::Tensor d = split.input_backward(u.output, g, u.input);
      const double tb = seconds_since(t);
      t = Clock::now();
      split.weight_backward();
      embedding_backward(u, d);
      const double tw = seconds_since(t);

      Unit1 v = run_forward(model, r, tokens, targets, activation);
      t = Clock::now();
      embedding_backward(v, full_backward(v.output, root_grad(v, r.last), v.input));
      const double tbw = seconds_since(t);

      Unit1 x = run_forward(model, r, tokens, targets, activation);
      t = Clock::now();
      Unit1 y = run_forward(model, r, tokens, targets, activation);
      embedding_backward(x, full_backward(x.output, root_grad(x, r.last), x.input));
      const double tfb = seconds_since(t);
      if (rep == 0) continue;
      f.push_back(tf);
      b.push_back(tb);
      w.push_back(tw);
      bw.push_back(tbw);
      fb.push_back(tfb);
    }
  }
  std::vector<StageCosts> out;
  for (size_t si = 0; si < stages.size(); ++si) {
    const auto& sm = samples[si];
    StageCosts s;
    s.stage = stages[si].stage;
    s.costs.F = median(sm.f);
    s.costs.B = median(sm.b);
    s.costs.W = median(sm.w);
    s.costs.FB = median(sm.fb);
    s.BW = median(sm.bw);
    out.push_back(s);
  }
  model->zero_grad(/*set_to_none=*/true);
  return out;
}

Costs mean_costs(const std::vector<StageCosts>& per_stage) {
  Costs c{0, 0, 0, 0, 0};
  for (const auto& s : per_stage) {
    c.F += s.costs.F;
    c.B += s.costs.B;
    c.W += s.costs.W;
    c.FB += s.costs.FB;
  }
  const double n = static_cast<double>(per_stage.size());
  c.F /= n;
  c.B /= n;
  c.W /= n;
  c.FB /= n;
  return c;
}

}  // namespace ts::parallel
