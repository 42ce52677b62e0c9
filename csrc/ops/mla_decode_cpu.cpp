// CPU backend of torch.ops.tinyseek.mla_decode (fp32 or bf16): checks, then the torch-free kernel.
#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/mla_decode.h"
#include "csrc/ops/mla_decode_internal.h"
#include "csrc/util/check.h"
#include "kernels/mla_decode.h"

namespace ts::ops {

Tensor2 CpuKernels::mla_decode(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_table,
                               const at::Tensor& seq_lens, int64_t head_dim_v, double softmax_scale) {
  check_mla_decode_args(q, kv_cache, block_table, seq_lens, head_dim_v, softmax_scale);
  TS_CHECK_ARG("mla_decode", q, q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16,
               "expected float32 or bfloat16 on CPU, got ", q.scalar_type());
  check_mla_decode_values(kv_cache, block_table, seq_lens);
  MlaDecodeOperands o(q, kv_cache, block_table, seq_lens, head_dim_v, softmax_scale);
  if (o.params.B > 0) kern::mla_decode_cpu(o.params);
  return {o.out, o.lse};
}

}  // namespace ts::ops
