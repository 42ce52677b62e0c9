// CPU twin of the MoE grouped GEMM (contract in kernels/moe.h): the packed GEMM of gemm_f32.h over
// tiles of each expert's product.
//
// Why tiles: one product per expert, one expert after another, loses parallel efficiency on small
// experts; one product per expert spread over threads serializes on the heaviest expert. Each
// expert's output is cut into tiles of about equal cost, columns first (a column tile packs only
// its own part of B, so nothing is packed twice), rows only when an expert has too few columns to
// keep every thread busy; the tiles are spread over threads. Each output element is one dot
// product summed in order over k, so results do not depend on the threads or the tiling.
#include <algorithm>
#include <vector>

#include "kernels/common.h"
#include "kernels/cpu/gemm_f32.h"
#include "kernels/moe.h"

namespace ts::kern {
namespace {

constexpr int64_t kTilesPerThread = 4;
constexpr int64_t kMinTileCols = 128;  // a row group of A is reused over at least 4 panels of B
constexpr int64_t kMinTileRows = 96;   // row splits repack B: only for tall tiles

// Rows [r0, r1) and columns [c0, c1) of expert e's product.
struct Tile {
  int64_t expert, r0, r1, c0, c1;
};

// Runs f(tile) for every tile, spread over threads when there are several.
template <class F>
void run_tiles(const std::vector<Tile>& tiles, F&& f) {
  const int64_t n = static_cast<int64_t>(tiles.size());
#if defined(_OPENMP)
  if (n > 1 && num_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) f(tiles[i]);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) f(tiles[i]);
}

int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Tiles of the E products C_e [rows(e), cols] with depth depth(e); cost rows * cols * depth. An
// expert whose product is empty (no rows or no columns) gets no tile, one with rows but depth 0
// gets tiles that write zeros.
template <class Rows, class Depth>
std::vector<Tile> make_tiles(int64_t E, int64_t cols, Rows&& rows, Depth&& depth) {
  double total = 0;
  for (int64_t e = 0; e < E; ++e) total += static_cast<double>(rows(e)) * cols * std::max<int64_t>(depth(e), 1);
  const double target = std::max(1.0, total / static_cast<double>(kTilesPerThread * num_threads()));
  const int64_t tr = gemm_f32_tile_rows(), tc = gemm_f32_tile_cols();
  std::vector<Tile> tiles;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t R = rows(e);
    if (R == 0 || cols == 0) continue;
    const double cost = static_cast<double>(R) * cols * std::max<int64_t>(depth(e), 1);
    const int64_t pieces = std::max<int64_t>(1, static_cast<int64_t>(cost / target + 0.5));
    const int64_t col_pieces = std::clamp<int64_t>(pieces, 1, std::max<int64_t>(1, cols / kMinTileCols));
    const int64_t width = round_up(ceil_div(cols, col_pieces), tc);
    const int64_t row_pieces =
        std::clamp<int64_t>(ceil_div(pieces, ceil_div(cols, width)), 1, std::max<int64_t>(1, R / kMinTileRows));
    const int64_t height = round_up(ceil_div(R, row_pieces), tr);
    for (int64_t r = 0; r < R; r += height)
      for (int64_t c = 0; c < cols; c += width)
        tiles.push_back({e, r, std::min(r + height, R), c, std::min(c + width, cols)});
  }
  return tiles;
}

// C = A . B_e on the rows of every expert e (rows [off[e], off[e+1])): A [M, depth] and C [M, cols]
// row-major over the sorted rows; B_e [depth, cols] at b + e * b_expert_stride, element (k, n) at
// k * b_rs + n * b_cs. The forward (B_e = w[e]^T) and grad_x (B_e = w[e]) are both this product.
void expert_rows_gemm(const int64_t* off, int64_t E, int64_t cols, int64_t depth, const float* a, const float* b,
                      int64_t b_expert_stride, int64_t b_rs, int64_t b_cs, float* c) {
  auto rows = [&](int64_t e) { return off[e + 1] - off[e]; };
  run_tiles(make_tiles(E, cols, rows, [&](int64_t) { return depth; }), [&](const Tile& t) {
    const int64_t r = off[t.expert] + t.r0;
    GemmF32 g;
    g.m = t.r1 - t.r0, g.n = t.c1 - t.c0, g.k = depth;
    g.a = a + r * depth, g.a_rs = depth, g.a_cs = 1;
    g.b = b + t.expert * b_expert_stride + t.c0 * b_cs, g.b_rs = b_rs, g.b_cs = b_cs;
    g.c = c + r * cols + t.c0, g.ldc = cols;
    gemm_f32(g);
  });
}

}  // namespace

void moe_grouped_gemm_cpu(const MoeGroupedGemmParams& p) {
  const int64_t M = p.rows, N = p.out_features, H = p.hidden, E = p.experts;
  TS_KERNEL_ASSERT(M >= 0 && N >= 0 && H >= 0 && E >= 0);
  const int64_t* off = p.expert_offsets;
  TS_KERNEL_ASSERT(off[0] == 0 && off[E] == M);
  // out[b + i, n] = sum_h x[b + i, h] * w[e, n, h]: A = x rows, B(h, n) = w[e][n * H + h].
  expert_rows_gemm(off, E, N, H, p.x_sorted, p.w, N * H, 1, H, p.out);
}

void moe_grouped_gemm_backward_cpu(const MoeGroupedGemmBackwardParams& p) {
  const int64_t M = p.rows, N = p.out_features, H = p.hidden, E = p.experts;
  TS_KERNEL_ASSERT(M >= 0 && N >= 0 && H >= 0 && E >= 0);
  const int64_t* off = p.expert_offsets;
  TS_KERNEL_ASSERT(off[0] == 0 && off[E] == M);
  if (H == 0) return;  // grad_x [M, 0] and grad_w [E, N, 0] hold nothing
  if (p.grad_x) {
    TS_KERNEL_ASSERT(M == 0 || N == 0 || p.w != nullptr);
    // grad_x[b + i, h] = sum_n grad_out[b + i, n] * w[e, n, h]: A = grad_out rows, B = w[e] as is.
    expert_rows_gemm(off, E, H, N, p.grad_out, p.w, N * H, H, 1, p.grad_x);
  }
  if (p.grad_w && N > 0) {
    TS_KERNEL_ASSERT(M == 0 || p.x_sorted != nullptr);
    // grad_w[e, n, h] = sum_i grad_out[b + i, n] * x[b + i, h]: A(n, i) = grad_out[(b + i) * N + n]
    // (columns contiguous), B = the expert's x rows; an expert without rows gets zeros (depth 0).
    auto rows = [&](int64_t) { return N; };
    auto depth = [&](int64_t e) { return off[e + 1] - off[e]; };
    run_tiles(make_tiles(E, H, rows, depth), [&](const Tile& t) {
      const int64_t b = off[t.expert];
      GemmF32 g;
      g.m = t.r1 - t.r0, g.n = t.c1 - t.c0, g.k = off[t.expert + 1] - b;
      g.a = p.grad_out + b * N + t.r0, g.a_rs = 1, g.a_cs = N;
      g.b = p.x_sorted + b * H + t.c0, g.b_rs = H, g.b_cs = 1;
      g.c = p.grad_w + (t.expert * N + t.r0) * H + t.c0, g.ldc = H;
      gemm_f32(g);
    });
  }
}

}  // namespace ts::kern
