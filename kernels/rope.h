// Rotary position embedding (RoFormer; the pairs layout of DeepSeek-V3's decoupled key):
//   y[.., 2i]   = x[.., 2i] c_i - x[.., 2i+1] s_i
//   y[.., 2i+1] = x[.., 2i] s_i + x[.., 2i+1] c_i
// with c, s the cos and sin of the token's position times frequency i. `inverse` rotates by the
// negative angle (s -> -s), which is also the backward: grad_x = rope(grad_y, inverse).
//
// Dimensions: x, y [B, T, H, D] contiguous (D even); cos, sin [Bt, T, D/2] fp32 with Bt = 1 (every
// sequence at the same positions: training) or B (each sequence at its own: decoding). Each
// product is rounded before the sum (no fused multiply-add), so the result is the one of the
// same formula composed of torch ops.
#pragma once

#include <cstdint>

namespace ts::kern {

struct RopeParams {
  const float* x = nullptr;    // [B, T, H, D]
  const float* cos = nullptr;  // [Bt, T, D/2]
  const float* sin = nullptr;  // [Bt, T, D/2]
  float* y = nullptr;          // [B, T, H, D]; may be x (in place)
  int64_t batch = 0, seq = 0, heads = 0, dim = 0;
  bool per_sequence = false;  // Bt = B (else 1)
  bool inverse = false;
};

// CPU twin: threaded over (b, t) rows.
void rope_cpu(const RopeParams& p);

}  // namespace ts::kern

#if defined(TINYSEEK_WITH_CUDA)
#include <cuda_runtime_api.h>
namespace ts::kern {
// The same contract with fp32 or bf16 storage for x and y (tables fp32, arithmetic fp32).
struct RopeCudaParams {
  const void* x = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  void* y = nullptr;
  int64_t batch = 0, seq = 0, heads = 0, dim = 0;
  bool per_sequence = false, inverse = false, bf16 = false;
};
void rope_cuda(const RopeCudaParams& p, cudaStream_t stream);
}  // namespace ts::kern
#endif
