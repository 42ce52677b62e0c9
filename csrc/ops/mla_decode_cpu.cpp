// CPU backend of torch.ops.tinyseek.mla_decode (fp32 or bf16): checks, then the torch-free kernel.
#include <torch/library.h>

#include "csrc/ops/mla_decode.h"
#include "csrc/util/check.h"
#include "kernels/mla_decode.h"

namespace ts::ops {
namespace {

std::tuple<at::Tensor, at::Tensor> mla_decode_cpu(const at::Tensor& q_in, const at::Tensor& kv_cache,
                                                  const at::Tensor& block_table, const at::Tensor& seq_lens,
                                                  int64_t head_dim_v, double softmax_scale) {
  check_mla_decode_args(q_in, kv_cache, block_table, seq_lens, head_dim_v, softmax_scale);
  TS_CHECK_ARG("mla_decode", q, q_in.scalar_type() == at::kFloat || q_in.scalar_type() == at::kBFloat16,
               "expected float32 or bfloat16 on CPU, got ", q_in.scalar_type());
  check_mla_decode_values(kv_cache, block_table, seq_lens);
  auto q = q_in.contiguous();
  auto table = block_table.contiguous();
  auto lens = seq_lens.contiguous();
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2);
  auto out = at::empty({B, S, H, head_dim_v}, q.options());
  auto lse = at::empty({B, H, S}, q.options().dtype(at::kFloat));
  if (B == 0) return {out, lse};
  kern::MlaDecodeParams p;
  p.q = q.data_ptr();
  p.kv_cache = kv_cache.data_ptr();
  p.block_table = table.data_ptr<int32_t>();
  p.seq_lens = lens.data_ptr<int32_t>();
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.B = B;
  p.S_q = S;
  p.H = H;
  p.D_qk = q.size(3);
  p.D_v = head_dim_v;
  p.num_blocks = kv_cache.size(0);
  p.block_size = kv_cache.size(1);
  p.max_blocks = table.size(1);
  p.softmax_scale = static_cast<float>(softmax_scale);
  p.dtype = q.scalar_type() == at::kFloat ? kern::MlaDtype::kFloat32 : kern::MlaDtype::kBFloat16;
  kern::mla_decode_cpu(p);
  return {out, lse};
}

}  // namespace
}  // namespace ts::ops

TORCH_LIBRARY_IMPL(tinyseek, CPU, m) { m.impl("mla_decode", &ts::ops::mla_decode_cpu); }
