// CPU backend of torch.ops.tinyseek.decode_attention: checks, layout, then the torch-free kernel.
#include "csrc/ops/backend_kernels.h"
#include "csrc/ops/decode_attention.h"
#include "csrc/util/check.h"
#include "kernels/decode_attention.h"

namespace ts::ops {
namespace {
// The kernel reads heads and features contiguously; batch and position strides are free.
at::Tensor rows_layout(const at::Tensor& t) {
  return t.stride(3) == 1 && t.stride(2) == t.size(3) ? t : t.contiguous();
}
}  // namespace

at::Tensor CpuKernels::decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& last, double scale) {
  const char* op = "decode_attention";
  check_decode_attention_args(q, k, v, last);
  TS_CHECK_DTYPE(op, q, at::kFloat);  // the CPU kernel is fp32
  auto qc = q.contiguous(), kc = rows_layout(k), vc = rows_layout(v), lc = last.contiguous();
  const int64_t L = k.size(1);
  const int64_t* lp = lc.data_ptr<int64_t>();
  for (int64_t i = 0; i < lc.numel(); ++i)
    TS_CHECK_ARG(op, last, lp[i] >= 0 && lp[i] < L, "expected every entry in [0, L) = [0, ", L, "), got ", lp[i],
                 " at flat index ", i);
  auto out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  if (out.numel() == 0) return out;
  kern::decode_attention_cpu({qc.data_ptr<float>(), kc.data_ptr<float>(), vc.data_ptr<float>(), lp,
                              out.data_ptr<float>(), q.size(0), q.size(1), q.size(2), k.size(2), L, q.size(3),
                              v.size(3), kc.stride(0), kc.stride(1), vc.stride(0), vc.stride(1),
                              static_cast<float>(scale)});
  return out;
}

}  // namespace ts::ops
