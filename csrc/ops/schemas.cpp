// Every tinyseek op's schema, in one place. The Meta, CPU and CUDA kernels are listed in
// backend_kernels.h (registered by backend_kernels.cpp and backend_kernels_cuda.cpp); Composite and
// Autograd kernels register in their family's <family>.cpp.
#include <torch/library.h>

TORCH_LIBRARY(tinyseek, m) {
  // RMSNorm over the last dim. Returns y and the per-row rstd the backward reuses.
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("rms_norm_fwd(Tensor x, Tensor weight, float eps) -> (Tensor y, Tensor rstd)");
  m.def("rms_norm_bwd(Tensor grad_y, Tensor x, Tensor weight, Tensor rstd) -> (Tensor grad_x, Tensor grad_weight)");

  // FP8 (E4M3, torch.float8_e4m3fn) of DeepSeek-V3 §3.3; numerics in kernels/fp8.h, C++ API in
  // csrc/ops/fp8.h. Quantizers: x [M, K] -> codes and fp32 scales per 1 x group tile / block x block.
  m.def("fp8_quantize_tilewise(Tensor x, int group=128, bool pow2_scale=False) -> (Tensor q, Tensor scale)");
  m.def("fp8_quantize_blockwise(Tensor w, int block=128, bool pow2_scale=False) -> (Tensor q, Tensor scale)");
  m.def("fp8_dequantize(Tensor q, Tensor scale, int tile_rows, int tile_cols) -> Tensor");
  // out [M, N] = A B^T; b_scale in 128 x 128 blocks or per-row tiles; the last three drive the CPU
  // emulator's limited-precision accumulator.
  m.def(
      "fp8_gemm_nt(Tensor a_q, Tensor a_scale, Tensor b_q, Tensor b_scale, ScalarType out_dtype=float32, "
      "int promote_interval=128, int accum_mantissa_bits=23, str accum_model=\"align_truncate\") -> Tensor");
  // y = x W^T with Fprop, Dgrad and Wgrad in FP8: V3's fine-grained recipe, and the per-tensor
  // delayed-scaling baseline (scales [3] for x, weight, grad_y; <= 0 means just in time).
  m.def(
      "fp8_linear(Tensor x, Tensor weight, int promote_interval=128, int accum_mantissa_bits=23, "
      "str accum_model=\"align_truncate\") -> Tensor");
  m.def(
      "fp8_linear_per_tensor(Tensor x, Tensor weight, Tensor scales, int promote_interval=128, "
      "int accum_mantissa_bits=23, str accum_model=\"align_truncate\") -> Tensor");

  // MLA decode attention over a paged latent cache, FlashMLA layout (kernels/mla_decode.h):
  // q [B, S_q, H, D_qk], kv_cache [num_blocks, block_size, 1, D_qk], block_table [B, max_blocks]
  // int32, seq_lens [B] int32 (including the S_q new tokens, which attend causally) ->
  // out [B, S_q, H, head_dim_v], lse [B, H, S_q] fp32. Inference only.
  m.def(
      "mla_decode(Tensor q, Tensor kv_cache, Tensor block_table, Tensor seq_lens, int head_dim_v, "
      "float softmax_scale) -> (Tensor out, Tensor lse)");

  // Routed experts (DeepSeekMoE; kernels/moe.h, C++ API csrc/ops/moe.h). T tokens, K choices, E
  // experts, M = T*K sorted rows. sorted_to_token holds the slot t*K + k of each sorted row.
  m.def(
      "moe_permute(Tensor x, Tensor topk_ids, int num_experts) -> "
      "(Tensor x_sorted, Tensor sorted_to_token, Tensor expert_offsets)");
  m.def("moe_permute_bwd(Tensor grad_x_sorted, Tensor sorted_to_token, SymInt tokens) -> Tensor");
  m.def("moe_unpermute(Tensor y_sorted, Tensor sorted_to_token, Tensor topk_weights) -> Tensor");
  m.def(
      "moe_unpermute_bwd(Tensor grad_y, Tensor y_sorted, Tensor sorted_to_token, Tensor topk_weights) -> "
      "(Tensor grad_y_sorted, Tensor grad_topk_weights)");
  // out [M, N] = rows of expert e times w[e]^T, w [E, N, H] (NT, DeepGEMM's contiguous layout).
  m.def("grouped_gemm(Tensor x_sorted, Tensor w, Tensor expert_offsets) -> Tensor");
  m.def(
      "grouped_gemm_bwd(Tensor grad_out, Tensor x_sorted, Tensor w, Tensor expert_offsets) -> "
      "(Tensor grad_x_sorted, Tensor grad_w)");

  // y = x W^T for the few rows of a decoding step (csrc/ops/skinny_linear.h); inference only.
  m.def("skinny_linear(Tensor x, Tensor weight) -> Tensor");
  // Rotary embedding of x [B, T, H, D] by fp32 tables [T, D/2] or [B, T, D/2] (csrc/ops/rope.h).
  m.def("rope(Tensor x, Tensor cos, Tensor sin, bool inverse=False) -> Tensor");
  // MHA/GQA/MQA attention of a decoding step's queries over the cache (csrc/ops/decode_attention.h):
  // q [B, S, H, D], k [B, L, Hk, D], v [B, L, Hk, Dv], last [B, S] int64 -> [B, S, H, Dv]. Inference only.
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, Tensor last, float scale) -> Tensor");
  // Fused SwiGLU activation silu(gate) * up (csrc/ops/swiglu.h) and its backward.
  m.def("swiglu(Tensor gate, Tensor up) -> Tensor");
  m.def("swiglu_bwd(Tensor grad_out, Tensor gate, Tensor up) -> (Tensor grad_gate, Tensor grad_up)");
  // The same over one [..., 2F] buffer holding [gate | up] (the MoE experts' fused W1/W3 output):
  // the backward writes the [..., 2F] gradient in place of two halves to be stitched together.
  m.def("swiglu_packed(Tensor gate_up) -> Tensor");
  m.def("swiglu_packed_bwd(Tensor grad_out, Tensor gate_up) -> Tensor");

  // GRPO (DeepSeekMath §4) with TRL's loss types (csrc/ops/grpo.h): per-token log-probs [N, L],
  // advantages [N], mask [N, L] -> (loss, stats [5]: clip ratio low/high/region, mean KL, mean ratio).
  m.def(
      "grpo_loss(Tensor logp, Tensor old_logp, Tensor advantages, Tensor mask, Tensor? ref_logp=None, "
      "float beta=0.0, float epsilon=0.2, float? epsilon_high=None, str loss_type=\"grpo\", "
      "str importance_sampling=\"token\", int? max_completion_length=None, bool clip=True) -> (Tensor loss, "
      "Tensor stats)");
  // rewards [P, G] -> advantages [P, G], scale group | batch | none.
  m.def("group_advantages(Tensor rewards, str scale=\"group\") -> Tensor");
}
