// torch.ops.tinyseek.mla_decode: argument checks, the kernel operands both backends fill, the
// C++ entry point and the Meta kernel. Backends: mla_decode_cpu.cpp, mla_decode_cuda.cpp.
// Inference only: no autograd kernel.
#include "csrc/ops/mla_decode.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>

#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/mla_decode_internal.h"
#include "csrc/util/check.h"

namespace ts::ops {

void check_mla_decode_args(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_table,
                           const at::Tensor& seq_lens, int64_t head_dim_v, double softmax_scale) {
  const char* op = "mla_decode";
  TS_CHECK_DIM(op, q, 4);
  TS_CHECK_DIM(op, kv_cache, 4);
  TS_CHECK_DIM(op, block_table, 2);
  TS_CHECK_DIM(op, seq_lens, 1);
  TS_CHECK_ARG(op, q, at::isFloatingType(q.scalar_type()), "expected a floating dtype, got ", q.scalar_type());
  TS_CHECK_ARG(op, kv_cache, kv_cache.scalar_type() == q.scalar_type(), "expected the dtype of q (", q.scalar_type(),
               "), got ", kv_cache.scalar_type());
  TS_CHECK_DTYPE(op, block_table, at::kInt);
  TS_CHECK_DTYPE(op, seq_lens, at::kInt);
  TS_CHECK_SAME_DEVICE(op, kv_cache, q);
  TS_CHECK_SAME_DEVICE(op, block_table, q);
  TS_CHECK_SAME_DEVICE(op, seq_lens, q);
  const auto B = q.sym_size(0), D_qk = q.sym_size(3);
  TS_CHECK_ARG(op, q, q.sym_size(1) >= 1 && q.sym_size(2) >= 1 && D_qk >= 1,
               "expected [B, S_q, H, D_qk] with S_q, H, D_qk >= 1, got shape ", ::ts::shape_str(q));
  TS_CHECK_ARG(op, kv_cache, kv_cache.sym_size(2) == 1,
               "expected one KV head at dim 2 ([num_blocks, block_size, 1, D_qk]: MLA caches one latent row per "
               "token), got shape ",
               ::ts::shape_str(kv_cache));
  TS_CHECK_ARG(op, kv_cache, kv_cache.sym_size(3) == D_qk, "expected D_qk = ", D_qk,
               " (the last dim of q) at dim 3, got shape ", ::ts::shape_str(kv_cache));
  TS_CHECK_ARG(op, kv_cache, kv_cache.sym_size(1) >= 16 && kv_cache.sym_size(1) % 16 == 0,
               "expected a block_size (dim 1) that is a positive multiple of 16, got shape ",
               ::ts::shape_str(kv_cache));
  TS_CHECK_CONTIGUOUS(op, kv_cache);
  TS_CHECK_ARG(op, block_table, block_table.sym_size(0) == B, "expected ", B, " rows (the batch of q), got shape ",
               ::ts::shape_str(block_table));
  TS_CHECK_ARG(op, seq_lens, seq_lens.sym_size(0) == B, "expected ", B, " entries (the batch of q), got shape ",
               ::ts::shape_str(seq_lens));
  TS_CHECK_ARG(op, head_dim_v, head_dim_v >= 1 && head_dim_v <= D_qk, "expected 1 <= head_dim_v <= D_qk (", D_qk,
               "), got ", head_dim_v);
  TS_CHECK_ARG(op, softmax_scale, std::isfinite(softmax_scale) && softmax_scale > 0,
               "expected a finite softmax_scale > 0, got ", softmax_scale);
}

void check_mla_decode_values(const at::Tensor& kv_cache, const at::Tensor& block_table, const at::Tensor& seq_lens) {
  const char* op = "mla_decode";
  const int64_t NB = kv_cache.size(0), BS = kv_cache.size(1), MB = block_table.size(1);
  auto lens = seq_lens.contiguous();
  auto table = block_table.contiguous();
  const int32_t* l = lens.data_ptr<int32_t>();
  const int32_t* t = table.data_ptr<int32_t>();
  for (int64_t b = 0; b < lens.numel(); ++b) {
    TS_CHECK_ARG(op, seq_lens, l[b] >= 0 && l[b] <= MB * BS, "entry ", b, " is ", l[b], ", expected [0, ", MB * BS,
                 "] (block_table's ", MB, " blocks of ", BS, " rows)");
    for (int64_t i = 0; i < (l[b] + BS - 1) / BS; ++i)
      TS_CHECK_ARG(op, block_table, t[b * MB + i] >= 0 && t[b * MB + i] < NB, "entry [", b, ", ", i, "] is ",
                   t[b * MB + i], ", expected a block id in [0, ", NB, ")");
  }
}

namespace {

// The backends check q's dtype against what their kernel takes before they get here.
kern::MlaDtype mla_dtype(at::ScalarType t) {
  if (t == at::kBFloat16) return kern::MlaDtype::kBFloat16;
  if (t == at::kHalf) return kern::MlaDtype::kFloat16;
  TORCH_CHECK(t == at::kFloat, "tinyseek.mla_decode: no kernel for dtype ", t);
  return kern::MlaDtype::kFloat32;
}

}  // namespace

MlaDecodeOperands::MlaDecodeOperands(const at::Tensor& q_in, const at::Tensor& kv_cache, const at::Tensor& block_table,
                                     const at::Tensor& seq_lens, int64_t head_dim_v, double softmax_scale)
    : q(q_in.contiguous()), table(block_table.contiguous()), lens(seq_lens.contiguous()) {
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2);
  out = at::empty({B, S, H, head_dim_v}, q.options());
  lse = at::empty({B, H, S}, q.options().dtype(at::kFloat));
  params.q = q.data_ptr();
  params.kv_cache = kv_cache.data_ptr();
  params.block_table = table.data_ptr<int32_t>();
  params.seq_lens = lens.data_ptr<int32_t>();
  params.out = out.data_ptr();
  params.lse = lse.data_ptr<float>();
  params.B = B;
  params.S_q = S;
  params.H = H;
  params.D_qk = q.size(3);
  params.D_v = head_dim_v;
  params.num_blocks = kv_cache.size(0);
  params.block_size = kv_cache.size(1);
  params.max_blocks = table.size(1);
  params.softmax_scale = static_cast<float>(softmax_scale);
  params.dtype = mla_dtype(q.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> mla_decode(const at::Tensor& q, const at::Tensor& kv_cache,
                                              const at::Tensor& block_table, const at::Tensor& seq_lens,
                                              int64_t head_dim_v, double softmax_scale) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("tinyseek::mla_decode", "").typed<decltype(mla_decode)>();
  return op.call(q, kv_cache, block_table, seq_lens, head_dim_v, softmax_scale);
}

// Shapes only: out [B, S_q, H, head_dim_v] in q's dtype, lse [B, H, S_q] fp32.
Tensor2 MetaKernels::mla_decode(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_table,
                                const at::Tensor& seq_lens, int64_t head_dim_v, double softmax_scale) {
  check_mla_decode_args(q, kv_cache, block_table, seq_lens, head_dim_v, softmax_scale);
  const auto B = q.sym_size(0), S = q.sym_size(1), H = q.sym_size(2);
  return {at::empty_symint({B, S, H, c10::SymInt(head_dim_v)}, q.options()),
          at::empty_symint({B, H, S}, q.options().dtype(at::kFloat))};
}

}  // namespace ts::ops
