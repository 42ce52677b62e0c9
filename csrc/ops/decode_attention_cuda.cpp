// CUDA backend of torch.ops.tinyseek.decode_attention: torch's fused attention under the mask the
// contract describes (key j visible to query (b, s) when j <= last[b, s]). On the GPU the step is
// bound by launches, not by this op's setup, so there is no kernel of our own here.
#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/decode_attention.h"

namespace ts::ops {

at::Tensor CudaKernels::decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const at::Tensor& last, double scale) {
  check_decode_attention_args(q, k, v, last);
  auto j = at::arange(k.size(1), last.options()).view({1, 1, -1});
  auto mask = (j <= last.unsqueeze(-1)).unsqueeze(1);  // [B, 1, S, L]
  auto o = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, 0.0,
                                            /*is_causal=*/false, scale, /*enable_gqa=*/k.size(2) != q.size(2));
  return o.transpose(1, 2).contiguous();
}

}  // namespace ts::ops
