// CUDA backend of torch.ops.tinyseek.mla_decode (bf16 or fp16 in, fp32 accumulation and lse).
// Lengths and block ids are device data and are not read back here (that would synchronize);
// the kernel reads only the blocks each length covers.
#include <c10/cuda/CUDAGuard.h>

#include <stdexcept>

#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/cuda_internal.h"
#include "csrc/ops/mla_decode.h"
#include "csrc/ops/mla_decode_internal.h"
#include "csrc/util/check.h"
#include "kernels/mla_decode.h"

namespace ts::ops {

Tensor2 CudaKernels::mla_decode(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_table,
                                const at::Tensor& seq_lens, int64_t head_dim_v, double softmax_scale) {
  const char* op = "mla_decode";
  check_mla_decode_args(q, kv_cache, block_table, seq_lens, head_dim_v, softmax_scale);
  TS_CHECK_ARG(op, q, q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf,
               "expected bfloat16 or float16 on CUDA, got ", q.scalar_type());
  TS_CHECK_ARG(op, q, q.size(3) % 8 == 0, "expected D_qk (dim 3) divisible by 8 on CUDA, got shape ",
               ::ts::shape_str(q));
  TS_CHECK_ARG(op, q, q.size(0) <= 65535, "expected at most 65535 sequences on CUDA, got ", q.size(0));
  c10::cuda::CUDAGuard guard(q.device());
  // The kernel trusts every length and block id it reads (an out-of-range one reads outside the
  // pool): they are checked on the host as for the CPU twin. The copies wait for the stream, a
  // few microseconds per call against reading past the cache.
  check_mla_decode_values(kv_cache, block_table.cpu(), seq_lens.cpu());
  MlaDecodeOperands o(q, kv_cache, block_table, seq_lens, head_dim_v, softmax_scale);
  TS_CHECK_ARG(op, q, reinterpret_cast<uintptr_t>(o.q.data_ptr()) % 16 == 0, "expected 16-byte aligned data");
  TS_CHECK_ARG(op, kv_cache, reinterpret_cast<uintptr_t>(kv_cache.data_ptr()) % 16 == 0,
               "expected 16-byte aligned data");
  if (o.params.B == 0) return {o.out, o.lse};
  kern::MlaDecodeParams& p = o.params;
  try {
    p.num_splits = kern::mla_decode_cuda_num_splits(p);
    const size_t ws_bytes = kern::mla_decode_cuda_workspace_bytes(p);
    at::Tensor ws;
    if (ws_bytes) ws = at::empty({static_cast<int64_t>(ws_bytes)}, q.options().dtype(at::kByte));
    p.workspace = ws_bytes ? ws.data_ptr() : nullptr;
    kern::mla_decode_cuda(p, current_stream());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, "tinyseek.", op, ": ", e.what());
  }
  return {o.out, o.lse};
}

}  // namespace ts::ops
