#include "csrc/parallel/expert_parallel.h"

#include <torch/autograd.h>

#include <cstdint>
#include <numeric>

#include "csrc/config/config.h"

namespace ts::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Forward: rows out by send_rows, in by recv_rows; backward: the reverse exchange. The Dist and
// Group outlive the autograd graph (shard_experts' contract); the context keeps their addresses.
class AllToAllRows : public torch::autograd::Function<AllToAllRows> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Dist* dist, const Group* group,
                               const std::vector<int64_t>& send_rows, const std::vector<int64_t>& recv_rows) {
    ctx->saved_data["dist"] = reinterpret_cast<int64_t>(dist);
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);
    ctx->saved_data["send"] = send_rows;
    ctx->saved_data["recv"] = recv_rows;
    return exchange(*dist, *group, x, send_rows, recv_rows);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* dist = reinterpret_cast<Dist*>(ctx->saved_data["dist"].toInt());
    auto* group = reinterpret_cast<const Group*>(ctx->saved_data["group"].toInt());
    auto send = ctx->saved_data["send"].toIntVector(), recv = ctx->saved_data["recv"].toIntVector();
    return {exchange(*dist, *group, grads[0], recv, send), {}, {}, {}, {}};
  }

  static torch::Tensor exchange(Dist& dist, const Group& group, const torch::Tensor& x,
                                const std::vector<int64_t>& send_rows, const std::vector<int64_t>& recv_rows) {
    auto in = x.contiguous();
    const int64_t recv_total = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
    auto shape = in.sizes().vec();
    shape[0] = recv_total;
    auto out = torch::empty(shape, in.options());
    // c10d splits count elements of dim 0, i.e. rows.
    dist.all_to_all_single(out, in, recv_rows, send_rows, &group);
    return out;
  }
};

// Dispatch, local experts, combine (see the header). xs [M, C] sorted by global expert,
// offsets [E + 1].
torch::Tensor run_sharded(nn::MoEImpl& moe, Dist& dist, const Group& group, int64_t local, const torch::Tensor& xs,
                          const torch::Tensor& offsets) {
  const int64_t W = group.size;
  // Rows for each (owner rank, local expert), then what each rank sends me for my experts.
  // The counts travel on the rows' device (NCCL only moves device tensors), then come to the host.
  auto send_counts = (offsets.slice(0, 1) - offsets.slice(0, 0, -1)).contiguous();  // [W * E_l]
  auto recv_counts = torch::empty_like(send_counts);
  {
    std::vector<int64_t> even(W, local);
    dist.all_to_all_single(recv_counts, send_counts, even, even, &group);
  }
  send_counts = send_counts.cpu();
  recv_counts = recv_counts.cpu();
  auto sc = send_counts.view({W, local}), rc = recv_counts.view({W, local});  // rc[s][j]: from s for my j
  std::vector<int64_t> send_rows(W), recv_rows(W);
  for (int64_t r = 0; r < W; ++r) {
    send_rows[r] = sc[r].sum().item<int64_t>();
    recv_rows[r] = rc[r].sum().item<int64_t>();
  }
  auto xr = AllToAllRows::apply(xs, &dist, &group, send_rows, recv_rows);  // [R, C] by (source, expert)

  // Reorder (source s, local expert j) blocks into (j, s) order: one contiguous segment per expert.
  const int64_t R = xr.size(0);
  const int64_t* c = rc.data_ptr<int64_t>();
  std::vector<int64_t> start(W * local);  // first received row of block (s, j)
  for (int64_t i = 0, run = 0; i < W * local; ++i) start[i] = run, run += c[i];
  auto perm = torch::empty({R}, torch::kLong);
  auto local_offsets = torch::empty({local + 1}, torch::kLong);
  int64_t* p = perm.data_ptr<int64_t>();
  int64_t* lo = local_offsets.data_ptr<int64_t>();
  int64_t row = 0;
  for (int64_t j = 0; j < local; ++j) {
    lo[j] = row;
    for (int64_t s = 0; s < W; ++s)
      for (int64_t k = 0; k < c[s * local + j]; ++k) p[row++] = start[s * local + j] + k;
  }
  lo[local] = row;
  const auto dev = xs.device();
  perm = perm.to(dev);
  auto inverse = torch::empty_like(perm).index_put_({perm}, torch::arange(R, perm.options()));

  auto y_local = moe.local_experts(xr.index_select(0, perm), local_offsets.to(dev));  // [R, C]
  auto yr = y_local.index_select(0, inverse);                                         // back to (s, j)
  return AllToAllRows::apply(yr, &dist, &group, recv_rows, send_rows);                // [M, C], xs order
}

}  // namespace

torch::Tensor all_to_all_rows(Dist& dist, const Group& group, const torch::Tensor& x,
                              const std::vector<int64_t>& send_rows, const std::vector<int64_t>& recv_rows) {
  return AllToAllRows::apply(x, &dist, &group, send_rows, recv_rows);
}

void shard_experts(nn::MoEImpl& moe, Dist& dist, const Group& group) {
  const int64_t E = moe.config().n_routed_experts, W = group.size;
  if (E % W)
    throw config::ConfigError("model.moe.n_routed_experts: expert parallelism over " + std::to_string(W) +
                              " ranks needs a multiple of " + std::to_string(W) + ", got " + std::to_string(E));
  const int64_t local = E / W, first = group.rank * local;
  {
    torch::NoGradGuard ng;
    for (auto* lin : {moe.w13.get(), moe.w2.get()}) lin->weight.set_data(lin->weight.narrow(0, first, local).clone());
  }
  moe.set_expert_runner([&moe, &dist, &group, local](const torch::Tensor& xs, const torch::Tensor& offsets) {
    return run_sharded(moe, dist, group, local, xs, offsets);
  });
}

void sum_step_loads(Dist& dist, const std::vector<std::shared_ptr<nn::MoEImpl>>& layers, const Group* g) {
  if (layers.empty()) return;
  std::vector<torch::Tensor> loads;
  for (const auto& m : layers)
    loads.push_back(m->step_load().defined() ? m->step_load().to(dist.device())
                                             : torch::zeros({m->config().n_routed_experts},
                                                            torch::TensorOptions(torch::kLong).device(dist.device())));
  std::vector<at::Tensor> t{torch::stack(loads)};
  dist.all_reduce(t, c10d::ReduceOp::SUM, g);
  for (size_t i = 0; i < layers.size(); ++i) layers[i]->set_step_load(t[0][static_cast<int64_t>(i)].clone());
}

}  // namespace ts::parallel
