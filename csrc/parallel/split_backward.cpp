#include "csrc/parallel/split_backward.h"

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/csrc/autograd/variable.h>

#include <unordered_map>
#include <unordered_set>

namespace ts::parallel {

namespace {

using torch::autograd::Edge;
using torch::autograd::edge_list;
using torch::autograd::Node;
using torch::autograd::variable_list;

// Keeps the gradients a node receives (its inputs in backward) for a later call.
struct KeepGrads : torch::autograd::FunctionPreHook {
  explicit KeepGrads(std::shared_ptr<variable_list> slot) : slot_(std::move(slot)) {}
  variable_list operator()(const variable_list& grads) override {
    *slot_ = grads;
    return grads;
  }
  std::shared_ptr<variable_list> slot_;
};

// reach[n]: whether `target` is reachable from n. Iterative post-order (graphs are deep).
std::unordered_map<Node*, bool> reachability(Node* start, Node* target) {
  std::unordered_map<Node*, bool> reach;
  std::vector<std::pair<Node*, size_t>> stack{{start, 0}};
  reach[start] = start == target;
  while (!stack.empty()) {
    auto& [n, i] = stack.back();
    const auto& edges = n->next_edges();
    if (i < edges.size()) {
      Node* m = edges[i++].function.get();
      if (!m) continue;
      auto it = reach.find(m);
      if (it == reach.end()) {
        reach[m] = m == target;
        stack.push_back({m, 0});
      } else if (it->second) {
        reach[n] = true;
      }
      continue;
    }
    const bool r = reach[n];
    stack.pop_back();
    if (r && !stack.empty()) reach[stack.back().first] = true;
  }
  return reach;
}

// Accumulators (leaf gradient sinks) reachable from n.
void collect_accumulators(const std::shared_ptr<Node>& n, edge_list* out, std::unordered_set<Node*>* seen) {
  if (!seen->insert(n.get()).second) return;
  if (dynamic_cast<torch::autograd::AccumulateGrad*>(n.get())) {
    out->emplace_back(n, 0);
    return;
  }
  for (const auto& e : n->next_edges())
    if (e.function) collect_accumulators(e.function, out, seen);
}

}  // namespace

at::Tensor SplitBackward::input_backward(const at::Tensor& root, const at::Tensor& root_grad, const at::Tensor& input) {
  TORCH_CHECK(nodes_.empty(), "SplitBackward: input_backward called twice before weight_backward");
  TORCH_CHECK(root.grad_fn(), "SplitBackward: the root has no autograd graph");
  TORCH_CHECK(input.is_leaf() && input.requires_grad(), "SplitBackward: the input must be a leaf that requires grad");
  const Edge input_edge = torch::autograd::impl::gradient_edge(input);
  const auto reach = reachability(root.grad_fn().get(), input_edge.function.get());

  // Weight nodes: activation nodes with an edge into the parameter-only part.
  std::unordered_map<Node*, int> owners;  // accumulator -> weight nodes behind which it lies
  std::unordered_set<Node*> visited;
  std::vector<std::shared_ptr<Node>> stack{root.grad_fn()};
  visited.insert(root.grad_fn().get());
  while (!stack.empty()) {
    std::shared_ptr<Node> n = stack.back();
    stack.pop_back();
    WeightNode w;
    std::unordered_set<Node*> in_node;  // accumulators of this node (several of its edges may share one)
    const auto& edges = n->next_edges();
    for (size_t i = 0; i < edges.size(); ++i) {
      const auto& e = edges[i];
      if (!e.function) continue;
      if (reach.at(e.function.get())) {
        if (visited.insert(e.function.get()).second) stack.push_back(e.function);
        continue;
      }
      std::unordered_set<Node*> seen;
      edge_list found;
      collect_accumulators(e.function, &found, &seen);
      if (found.empty()) continue;
      for (const auto& a : found)
        if (in_node.insert(a.function.get()).second) {
          ++owners[a.function.get()];
          w.params.push_back(a);
        }
      w.weight_edges.emplace_back(i, std::move(found));
    }
    if (!w.params.empty()) {
      w.node = n;
      w.grads = std::make_shared<variable_list>();
      n->add_pre_hook(std::make_unique<KeepGrads>(w.grads));
      nodes_.push_back(std::move(w));
    }
  }
  for (auto& w : nodes_)
    for (const auto& a : w.params) w.tied = w.tied || owners.at(a.function.get()) > 1;

  variable_list out = torch::autograd::Engine::get_default_engine().execute(
      {torch::autograd::impl::gradient_edge(root)}, {root_grad}, /*keep_graph=*/true, /*create_graph=*/false,
      /*accumulate_grad=*/false, {input_edge});
  TORCH_CHECK(out.size() == 1 && out[0].defined(), "SplitBackward: the input received no gradient");
  return out[0];
}

void SplitBackward::weight_backward() {
  auto& engine = torch::autograd::Engine::get_default_engine();
  for (auto& w : nodes_) {
    if (w.tied) {
      // Apply the node to the gradients it received in B, then send each parameter-side
      // gradient down its own edge only. Tied subgraphs may be shared, so they are kept.
      TORCH_CHECK(!w.grads->empty(), "SplitBackward: weight_backward before input_backward reached a weight node");
      variable_list out = (*w.node)(variable_list(*w.grads));
      for (const auto& [i, params] : w.weight_edges) {
        if (i >= out.size() || !out[i].defined()) continue;
        engine.execute({w.node->next_edge(i)}, {out[i]}, /*keep_graph=*/true, /*create_graph=*/false,
                       /*accumulate_grad=*/true, params);
      }
      continue;
    }
    edge_list roots;
    variable_list grads;
    for (size_t i = 0; i < w.grads->size(); ++i) {
      if (!(*w.grads)[i].defined()) continue;
      roots.emplace_back(w.node, static_cast<uint32_t>(i));
      grads.push_back((*w.grads)[i]);
    }
    TORCH_CHECK(!roots.empty(), "SplitBackward: weight_backward before input_backward reached a weight node");
    engine.execute(roots, grads, /*keep_graph=*/false, /*create_graph=*/false, /*accumulate_grad=*/true, w.params);
  }
  nodes_.clear();
}

at::Tensor full_backward(const at::Tensor& root, const at::Tensor& root_grad, const at::Tensor& input) {
  TORCH_CHECK(input.is_leaf() && input.requires_grad(), "full_backward: the input must be a leaf that requires grad");
  torch::autograd::Engine::get_default_engine().execute({torch::autograd::impl::gradient_edge(root)}, {root_grad},
                                                        /*keep_graph=*/false, /*create_graph=*/false,
                                                        /*accumulate_grad=*/true);
  TORCH_CHECK(input.grad().defined(), "full_backward: the input received no gradient");
  return input.grad();
}

}  // namespace ts::parallel
