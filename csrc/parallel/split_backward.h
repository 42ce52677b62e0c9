// Backward split into its input-gradient half (B) and its weight-gradient half (W) on any
// autograd graph, with no change to the modules: the weight-gradient store of zero-bubble
// schedules and DualPipe.
//
// How. Call "activation nodes" the autograd nodes from which the stage input is reachable;
// B must run exactly those, and the engine does when asked for the gradient of the input
// only (nodes skip outputs that lead nowhere needed, e.g. a matmul skips its weight
// gradient). Every activation node with an edge into the parameter-only part of the graph
// is a "weight node"; a pre-hook keeps the gradient it receives during B. W then runs each
// weight node again from its kept gradient, asking only for the parameters behind it, so
// the engine computes just the weight-gradient products and accumulates them into .grad.
// Each weight node gets its own engine call: one call with all of them would also carry
// gradients down activation edges into earlier parameters and count them twice. For the
// same reason a node whose parameters also feed another weight node (weight tying within a
// stage: the MTP modules' shared embedding and head) is not re-run through the engine, which
// could reach a tied parameter again down an activation edge; W applies such a node itself
// and sends each of its parameter-side gradients down that edge alone.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>

#include <memory>
#include <vector>

namespace ts::parallel {

class SplitBackward {
 public:
  // B: backpropagates `root_grad` from `root` to the leaf `input` (requires_grad) and returns
  // d input. The graph is kept for W. Parameters' .grad are not touched.
  at::Tensor input_backward(const at::Tensor& root, const at::Tensor& root_grad, const at::Tensor& input);
  // W: accumulates the weight gradients of the graph B ran into the parameters' .grad, then
  // drops what B kept. Call once, after input_backward.
  void weight_backward();
  bool pending() const { return !nodes_.empty(); }
  size_t weight_nodes() const { return nodes_.size(); }

 private:
  struct WeightNode {
    std::shared_ptr<torch::autograd::Node> node;
    std::shared_ptr<torch::autograd::variable_list> grads;  // filled by the pre-hook during B
    torch::autograd::edge_list params;                      // accumulators behind its weight edges
    // Its parameter-side edges (index into next_edges) and the accumulators behind each; used
    // when `tied` (one of its accumulators is also behind another weight node).
    std::vector<std::pair<size_t, torch::autograd::edge_list>> weight_edges;
    bool tied = false;
  };
  std::vector<WeightNode> nodes_;
};

// BW: the full backward of one unit at once (B and W fused); accumulates into the
// parameters' .grad and returns d input.
at::Tensor full_backward(const at::Tensor& root, const at::Tensor& root_grad, const at::Tensor& input);

}  // namespace ts::parallel
