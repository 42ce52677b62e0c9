// fp32 arithmetic over fp32 or bf16 storage: the element loads and stores the CUDA kernels with
// both storage types share (rope, rms_norm, swiglu).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace ts::kern {

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16(v); }

}  // namespace ts::kern
