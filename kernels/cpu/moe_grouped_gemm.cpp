// CPU twin of the MoE grouped GEMM (contract in kernels/moe.h): Eigen products over tiles of the
// contiguous expert segments.
//
// Why tiles: one product per expert, run one expert after another with Eigen's own threads,
// loses parallel efficiency on small experts; one product per expert spread over threads
// serializes on the heaviest expert. Cutting every segment into tiles of equal size (a tile never
// straddles two experts) and spreading the tiles over threads does neither. Tiles are sized so
// that each is one large Eigen product (at least kMinTile rows/columns, about 4 tiles per thread),
// so the packing of an expert's weight per tile costs under a few percent.
#include <Eigen/Core>
#include <algorithm>
#include <vector>

#include "kernels/common.h"
#include "kernels/moe.h"

namespace ts::kern {
namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMat = Eigen::Map<const RowMat>;
using Mat = Eigen::Map<RowMat>;

constexpr int64_t kMinTile = 64;
constexpr int64_t kTilesPerThread = 4;

// One unit of work: expert e, and a range [begin, end) of its rows (NT, NN) or of the output
// features (TN).
struct Tile {
  int64_t expert, begin, end;
};

// Runs f(tile) for every tile. A single tile runs on the calling thread so that Eigen can
// parallelize its product; several tiles are spread over threads (Eigen then stays serial inside
// each, since it does not nest inside an active OpenMP team).
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

// Row tiles of equal height over the expert segments (empty experts get none).
std::vector<Tile> row_tiles(const int64_t* offsets, int64_t E, int64_t M) {
  const int64_t height = std::max(kMinTile, ceil_div(M, kTilesPerThread * num_threads()));
  std::vector<Tile> tiles;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t b = offsets[e]; b < offsets[e + 1]; b += height)
      tiles.push_back({e, b, std::min(b + height, offsets[e + 1])});
  return tiles;
}

// Tiles over the output features n of grad_w[e], with about equal cost (rows_e * width) each;
// an empty expert gets one tile that zeroes its gradient.
std::vector<Tile> feature_tiles(const int64_t* offsets, int64_t E, int64_t M, int64_t N) {
  const int64_t target = std::max<int64_t>(1, ceil_div(M * N, kTilesPerThread * num_threads()));
  std::vector<Tile> tiles;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t rows = offsets[e + 1] - offsets[e];
    const int64_t pieces = std::clamp<int64_t>(ceil_div(rows * N, target), 1, std::max<int64_t>(1, N / kMinTile));
    const int64_t width = ceil_div(N, pieces);
    for (int64_t b = 0; b < N; b += width) tiles.push_back({e, b, std::min(b + width, N)});
  }
  return tiles;
}

}  // namespace

void moe_grouped_gemm_cpu(const MoeGroupedGemmParams& p) {
  const int64_t M = p.rows, N = p.out_features, H = p.hidden, E = p.experts;
  TS_KERNEL_ASSERT(M >= 0 && N >= 0 && H >= 0 && E >= 0);
  TS_KERNEL_ASSERT(p.expert_offsets[0] == 0 && p.expert_offsets[E] == M);
  if (N == 0) return;
  run_tiles(row_tiles(p.expert_offsets, E, M), [&](const Tile& tile) {
    const int64_t rows = tile.end - tile.begin;
    Mat out(p.out + tile.begin * N, rows, N);
    if (H == 0) {
      out.setZero();
      return;
    }
    ConstMat x(p.x_sorted + tile.begin * H, rows, H);
    ConstMat w(p.w + tile.expert * N * H, N, H);
    out.noalias() = x * w.transpose();
  });
}

void moe_grouped_gemm_backward_cpu(const MoeGroupedGemmBackwardParams& p) {
  const int64_t M = p.rows, N = p.out_features, H = p.hidden, E = p.experts;
  TS_KERNEL_ASSERT(M >= 0 && N >= 0 && H >= 0 && E >= 0);
  TS_KERNEL_ASSERT(p.expert_offsets[0] == 0 && p.expert_offsets[E] == M);
  if (H == 0) return;  // grad_x [M, 0] and grad_w [E, N, 0] hold nothing
  if (p.grad_x) {
    TS_KERNEL_ASSERT(M == 0 || p.w != nullptr);
    run_tiles(row_tiles(p.expert_offsets, E, M), [&](const Tile& tile) {
      const int64_t rows = tile.end - tile.begin;
      Mat gx(p.grad_x + tile.begin * H, rows, H);
      if (N == 0) {
        gx.setZero();
        return;
      }
      ConstMat go(p.grad_out + tile.begin * N, rows, N);
      ConstMat w(p.w + tile.expert * N * H, N, H);
      gx.noalias() = go * w;
    });
  }
  if (p.grad_w && N > 0) {
    TS_KERNEL_ASSERT(M == 0 || p.x_sorted != nullptr);
    const int64_t* off = p.expert_offsets;
    run_tiles(feature_tiles(off, E, M, N), [&](const Tile& tile) {
      const int64_t e = tile.expert, b = off[e], rows = off[e + 1] - b, width = tile.end - tile.begin;
      Mat gw(p.grad_w + (e * N + tile.begin) * H, width, H);
      if (rows == 0) {
        gw.setZero();
        return;
      }
      ConstMat go(p.grad_out + b * N, rows, N);
      ConstMat x(p.x_sorted + b * H, rows, H);
      gw.noalias() = go.middleCols(tile.begin, width).transpose() * x;
    });
  }
}

}  // namespace ts::kern
