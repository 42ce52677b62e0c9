#include "csrc/nn/mtp.h"

#include "csrc/nn/transformer.h"

namespace ts::nn {

MtpModuleImpl::MtpModuleImpl(const config::Config& c, int64_t depth) : depth_(depth) {
  const auto& m = c.model;
  hnorm = register_module("hnorm", RMSNorm(m.d_model, m.norm_eps));
  enorm = register_module("enorm", RMSNorm(m.d_model, m.norm_eps));
  eh_proj = register_module("eh_proj", Linear(2 * m.d_model, m.d_model, c.precision));
  block = register_module("block", Block(c, m.n_layers + depth - 1).ptr());
  norm = register_module("norm", RMSNorm(m.d_model, m.norm_eps));
}

torch::Tensor MtpModuleImpl::combine(const torch::Tensor& h_prev, const torch::Tensor& next_emb) {
  return eh_proj(torch::cat({hnorm(h_prev), enorm(next_emb)}, -1));
}

torch::Tensor MtpModuleImpl::forward(const torch::Tensor& h_prev, const torch::Tensor& next_emb, const Rope& rope) {
  return block->forward(combine(h_prev, next_emb), rope);
}

torch::Tensor MtpModuleImpl::forward_cached(const torch::Tensor& h_prev, const torch::Tensor& next_emb,
                                            const Rope& rope, KVCache& cache, int64_t layer,
                                            const std::vector<int64_t>* out_rows) {
  return block->forward_cached(combine(h_prev, next_emb), rope, cache, layer, out_rows);
}

}  // namespace ts::nn
