// The ops that Meta, CPU and CUDA each implement with a kernel of their own (schemas in
// schemas.cpp), listed once. Each backend is a struct with one static function per entry, defined
// with its op family (Meta: <family>.cpp, CPU: <family>_cpu.cpp, CUDA: <family>_cuda.cpp), and
// registers them all through register_kernels: a backend cannot miss an op, and a kernel defined
// with another signature than the list's does not compile. Composite and Autograd kernels are per
// op and stay with their families.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <string_view>
#include <tuple>
#include <type_traits>

namespace ts::ops {

using Tensor2 = std::tuple<at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// X(op, signature) for every backend kernel, in the order of schemas.cpp.
#define TS_BACKEND_KERNELS(X)                                                                                        \
  X(rms_norm_fwd, Tensor2(const at::Tensor& x, const at::Tensor& weight, double eps))                                \
  X(rms_norm_bwd,                                                                                                    \
    Tensor2(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& rstd))        \
  X(fp8_quantize_tilewise, Tensor2(const at::Tensor& x, int64_t group, bool pow2_scale))                             \
  X(fp8_quantize_blockwise, Tensor2(const at::Tensor& w, int64_t block, bool pow2_scale))                            \
  X(fp8_dequantize, at::Tensor(const at::Tensor& q, const at::Tensor& scale, int64_t tile_rows, int64_t tile_cols))  \
  X(fp8_gemm_nt, at::Tensor(const at::Tensor& a_q, const at::Tensor& a_scale, const at::Tensor& b_q,                 \
                            const at::Tensor& b_scale, at::ScalarType out_dtype, int64_t promote_interval,           \
                            int64_t accum_mantissa_bits, std::string_view accum_model))                              \
  X(mla_decode, Tensor2(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_table,              \
                        const at::Tensor& seq_lens, int64_t head_dim_v, double softmax_scale))                       \
  X(moe_permute, Tensor3(const at::Tensor& x, const at::Tensor& topk_ids, int64_t num_experts))                      \
  X(moe_permute_bwd,                                                                                                 \
    at::Tensor(const at::Tensor& grad_x_sorted, const at::Tensor& sorted_to_token, c10::SymInt tokens))              \
  X(moe_unpermute,                                                                                                   \
    at::Tensor(const at::Tensor& y_sorted, const at::Tensor& sorted_to_token, const at::Tensor& topk_weights))       \
  X(moe_unpermute_bwd, Tensor2(const at::Tensor& grad_y, const at::Tensor& y_sorted,                                 \
                               const at::Tensor& sorted_to_token, const at::Tensor& topk_weights))                   \
  X(grouped_gemm, at::Tensor(const at::Tensor& x_sorted, const at::Tensor& w, const at::Tensor& expert_offsets))     \
  X(grouped_gemm_bwd, Tensor2(const at::Tensor& grad_out, const at::Tensor& x_sorted, const at::Tensor& w,           \
                              const at::Tensor& expert_offsets))                                                     \
  X(skinny_linear, at::Tensor(const at::Tensor& x, const at::Tensor& weight))                                        \
  X(rope, at::Tensor(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse))               \
  X(decode_attention,                                                                                                \
    at::Tensor(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& last, double scale)) \
  X(swiglu, at::Tensor(const at::Tensor& gate, const at::Tensor& up))                                                \
  X(swiglu_bwd, Tensor2(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up))                   \
  X(swiglu_packed, at::Tensor(const at::Tensor& gate_up))                                                            \
  X(swiglu_packed_bwd, at::Tensor(const at::Tensor& grad_out, const at::Tensor& gate_up))

#define TS_DECLARE_KERNEL(op, signature) static std::type_identity_t<signature> op;
struct MetaKernels {
  TS_BACKEND_KERNELS(TS_DECLARE_KERNEL)
};
struct CpuKernels {
  TS_BACKEND_KERNELS(TS_DECLARE_KERNEL)
};
struct CudaKernels {
  TS_BACKEND_KERNELS(TS_DECLARE_KERNEL)
};
#undef TS_DECLARE_KERNEL

// What the Meta kernels of the backward ops return: contiguous gradients shaped like, and in the
// dtype of, the two inputs they differentiate.
inline Tensor2 empty_grads_like(const at::Tensor& a, const at::Tensor& b) {
  return {at::empty_symint(a.sym_sizes(), a.options()), at::empty_symint(b.sym_sizes(), b.options())};
}

// m.impl of every kernel of Kernels, inside that backend's TORCH_LIBRARY_IMPL block.
template <class Kernels>
void register_kernels(torch::Library& m) {
#define TS_REGISTER_KERNEL(op, signature) m.impl(#op, &Kernels::op);
  TS_BACKEND_KERNELS(TS_REGISTER_KERNEL)
#undef TS_REGISTER_KERNEL
}

}  // namespace ts::ops
