// Decode attention for MHA / GQA / MQA: the few new queries of a KV-cached step over the cached
// keys and values (the model's own rows already written), softmax(scale q k^T) v per head.
//
// Dimensions: B sequences, S queries per sequence, H query heads, Hk key/value heads (Hk divides
// H; query head h reads kv head h / (H / Hk)), L cached positions, D key width, Dv value width.
// Query (b, s) attends to positions [0, last[b][s]] (last < L; its own position for a real token).
//
// Layouts: q [B, S, H, D] and out [B, S, H, Dv] contiguous; k [B, L, Hk, D] and v [B, L, Hk, Dv]
// with contiguous heads and features but any batch and position strides (a view of the paged
// cache's pools when its blocks are in order). fp32 throughout; scores are the skinny GEMM's dot
// products (kernels/skinny_gemm.h), the softmax takes the maximum first and an exp within 3 ulp,
// and values are accumulated over positions in order, so a query's output does not depend on the
// other queries in the call.
//
// Why our own: at decode shapes (S <= a few, L <= a few hundred, D = 32..128) torch's CPU
// scaled_dot_product_attention costs 20-50 us per call in setup alone, more than the arithmetic.
// The CUDA path keeps torch's fused attention (csrc/ops/decode_attention_cuda.cpp).
#pragma once

#include <cstdint>

namespace ts::kern {

struct DecodeAttentionParams {
  const float* q = nullptr;       // [B, S, H, D]
  const float* k = nullptr;       // k[b, j, g, :] at k + b * k_batch_stride + j * k_row_stride + g * D
  const float* v = nullptr;       // v[b, j, g, :] at v + b * v_batch_stride + j * v_row_stride + g * Dv
  const int64_t* last = nullptr;  // [B, S], each in [0, L)
  float* out = nullptr;           // [B, S, H, Dv]
  int64_t B = 0, S = 0, H = 0, Hk = 0, L = 0, D = 0, Dv = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0, v_batch_stride = 0, v_row_stride = 0;
  float scale = 1.0f;
};

// CPU twin: threaded over (b, s, h) when there is enough work.
void decode_attention_cpu(const DecodeAttentionParams& p);

}  // namespace ts::kern
