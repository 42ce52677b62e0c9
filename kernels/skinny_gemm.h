// Skinny GEMM: y = x W^T for a few rows of x, the shape of every projection in KV-cached decoding
// (x holds batch x new-tokens rows: 1 for plain decoding, 1 + drafts for speculative verification).
//
// Dimensions: M rows of x (few: nn::Linear takes it up to 24 rows), K input features, N output
// features. W is the layer's weight as stored, [N, K] row-major (rows may be strided, as the keys
// of a KV cache are for decode attention), and is read straight from memory
// (no packing: at M this small, packing W would cost as much as the product itself).
//
// Every y[i][j] is the same sequence of fp32 operations whatever M, the tiling and the thread
// count: eight-lane FMA partial sums over k in order, a fixed pairwise reduction of the lanes, then
// the k % 8 tail in order. A row's result therefore does not depend on the other rows in the call,
// so a token verified together with drafts gets bit for bit the projection it gets alone.
//
// Why our own: on CPUs where the BLAS torch ships takes its generic path (AMD, see
// docs/results_mtp.md), a product of 2-8 rows costs 2-4x a single row (GEMV), which is most of
// what a verification step costs over a plain step. The GPU path keeps cuBLAS (torch's linear).
#pragma once

#include <cstdint>

namespace ts::kern {

struct SkinnyGemmParams {
  const float* x = nullptr;  // [M, K], row i at x + i * ldx
  int64_t ldx = 0;           // >= K
  const float* w = nullptr;  // [N, K], row j at w + j * ldw
  float* y = nullptr;        // [M, N], row i at y + i * ldy
  int64_t ldy = 0;           // >= N
  int64_t m = 0, n = 0, k = 0;
  int64_t ldw = 0;  // >= K; 0: K (contiguous)
};

// CPU twin: one thread below kSkinnyGemmParallelWork multiply-adds, else columns of W split over
// OpenMP threads (results identical either way, see above). 2^16 keeps a decode step's one-row
// products on the calling thread (at this size a second thread gained nothing on a 2-core Xeon)
// and splits the 3-4-row FFN products of a speculative step's verification and drafts (3 rows on
// 2 threads against 1: 3.9 against 4.8 us for 128 -> 352, 3.5 against 3.8 for 352 -> 128).
constexpr int64_t kSkinnyGemmParallelWork = int64_t{1} << 16;
void skinny_gemm_cpu(const SkinnyGemmParams& p);

}  // namespace ts::kern
