// A single-threaded fp32 GEMM for the CPU kernels (internal to kernels/cpu): C (+)= A * B with
// arbitrary row/column strides on A and B, so that one routine serves the NT, NN and TN products
// of the MoE grouped GEMM without transposed copies. Callers thread over tiles of C.
//
// Why our own instead of Eigen (used before) or a BLAS: Eigen's products reach 55-70% of the
// FLOP/s of the dense GEMM that torch's CPU build calls, which misses the grouped GEMM's target
// (0.9x); torch's BLAS is not reachable from the torch-free kernels, and a second BLAS in the same
// process would clash with the one torch exports. The method is the usual one (Goto / BLIS):
// B packed into panels of kNR columns that stay in L2, a register-blocked microkernel of kMR x kNR
// accumulators that broadcasts A straight from memory. Summation runs over k in order, so results
// do not depend on the number of threads or on the tiling.
#pragma once

#include <cstdint>

namespace ts::kern {

struct GemmF32 {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;  // A(i, p) = a[i * a_rs + p * a_cs], i < m, p < k; a_rs or a_cs is 1
  int64_t a_rs = 0, a_cs = 0;
  const float* b = nullptr;  // B(p, j) = b[p * b_rs + j * b_cs], p < k, j < n; b_rs or b_cs is 1
  int64_t b_rs = 0, b_cs = 0;
  float* c = nullptr;  // C(i, j) = c[i * ldc + j]
  int64_t ldc = 0;
  bool accumulate = false;  // C += A * B; otherwise C = A * B (C = 0 when k == 0)
};

void gemm_f32(const GemmF32& g);

// Shape of the microkernel's tile of C (rows, columns): tile splits aligned to these waste nothing.
int gemm_f32_tile_rows();
int gemm_f32_tile_cols();

}  // namespace ts::kern
