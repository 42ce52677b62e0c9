// CPU twin of the MLA decode kernel (contract in kernels/mla_decode.h).
//
// Why it is shaped this way: one cache row serves all H heads (MQA after absorption), so a work
// item takes every query row of one sequence (R = S_q * H rows, r = s * H + h as in q's layout)
// and walks a range of cache positions in tiles of kTile rows. Each tile is read once and used
// for two small GEMMs, both register-blocked over 8-lane vectors:
//   scores^T [T, R] = K [T, D_qk] . Q^T [D_qk, R]   (queries packed transposed, 16 rows a block,
//                                                     pre-scaled by softmax_scale * log2(e))
//   acc      [R, D_v] += P [R, T] . V [T, D_v]      (V = the first D_v columns of the same rows)
// with an online softmax in base 2 between them (running max m and sum l per row, acc rescaled
// when m grows). Long contexts with few sequences are split into chunks of positions (split-KV);
// each chunk leaves (m, l, acc) and a merge step combines them, as the CUDA kernel does.
#include "kernels/mla_decode.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "kernels/common.h"

namespace ts::kern {
namespace {

// 8 fp32 lanes, one AVX2 register under -march=x86-64-v3. GCC/Clang vector extensions keep the
// code portable (same arithmetic, other widths elsewhere) while giving explicit register blocks.
using v8 = float __attribute__((vector_size(32)));
using vi8 = int32_t __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store8(float* p, v8 v) { std::memcpy(p, &v, sizeof(v)); }
inline v8 splat8(float x) { return v8{} + x; }
// NaN-propagating: a NaN in either operand gives NaN (so a row's running max records a NaN score).
inline v8 max8(v8 a, v8 b) { return (a > b) | (a != a) ? a : b; }

constexpr int kTile = 64;           // cache positions per tile (may span blocks)
constexpr int kRowBlock = 16;       // query rows per packed Q^T block (two vectors)
constexpr int kQkKeys = 6;          // keys per score micro-kernel: 12 accumulators
constexpr int kPvRows = 4;          // rows per PV micro-kernel (x 3 vectors: 12 accumulators)
constexpr int64_t kMinChunk = 256;  // shortest split worth its Q packing and merge
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Running max before any visible score. Finite, so 2^(old - new) is 2^-126 (not NaN) when a
// row sees its first score; the row's acc and l are still 0 then, so the factor is harmless.
constexpr float kNoScore = -1e30f;

// 2^x on 8 lanes for x <= 0 (relative error ~3e-7): x = n + f with n = round(x), |f| <= 1/2,
// 2^f by its Taylor series to degree 6 (remainder < 1.2e-7). x is clamped to [-126, 0], so
// results below 2^-126 come back as 2^-126; callers mask positions that must be exactly 0.
inline v8 exp2_nonpos(v8 x) {
  x = x < -126.0f ? splat8(-126.0f) : x;
  x = x > 0.0f ? splat8(0.0f) : x;
  const vi8 n = __builtin_convertvector(x - 0.5f, vi8);  // truncation = ceil for negatives
  const v8 f = x - __builtin_convertvector(n, v8);
  v8 p = splat8(1.5403530393381606e-4f);
  p = p * f + 1.3333558146428443e-3f;
  p = p * f + 9.6181291076284772e-3f;
  p = p * f + 5.5504108664821580e-2f;
  p = p * f + 2.4022650695910071e-1f;
  p = p * f + 6.9314718055994531e-1f;
  p = p * f + 1.0f;
  const vi8 bits = (n + 127) << 23;
  return p * std::bit_cast<v8>(bits);
}

inline float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Storage types: fp32 as float, bf16 as its raw bits.
inline float to_float(float x) { return x; }
inline float to_float(uint16_t x) { return bf16_to_float(x); }
inline void from_float(float x, float* dst) { *dst = x; }
inline void from_float(float x, uint16_t* dst) { *dst = float_to_bf16(x); }

// s[j * ld_s + i] = sum_d k[j][d] * qt[d * 16 + i] for NJ keys and one 16-row query block.
template <int NJ>
inline void qk_keys(const float* const* k, const float* qt, int64_t D, float* s, int64_t ld_s) {
  const float* kr[NJ];
  v8 a0[NJ], a1[NJ];
  for (int j = 0; j < NJ; ++j) {
    kr[j] = k[j];
    a0[j] = a1[j] = v8{};
  }
  for (int64_t d = 0; d < D; ++d) {
    const v8 q0 = load8(qt + d * kRowBlock), q1 = load8(qt + d * kRowBlock + 8);
    for (int j = 0; j < NJ; ++j) {
      const v8 kb = splat8(kr[j][d]);
      a0[j] += kb * q0;
      a1[j] += kb * q1;
    }
  }
  for (int j = 0; j < NJ; ++j) {
    store8(s + j * ld_s, a0[j]);
    store8(s + j * ld_s + 8, a1[j]);
  }
}

// The n < kQkKeys keys left after the full groups: the micro-kernel instantiated for exactly n
// (one compile-time count per remainder, so the accumulators stay in registers).
template <int NJ = kQkKeys - 1>
inline void qk_keys_tail(int n, const float* const* k, const float* qt, int64_t D, float* s, int64_t ld_s) {
  if constexpr (NJ >= 1) {
    if (n == NJ)
      qk_keys<NJ>(k, qt, D, s, ld_s);
    else
      qk_keys_tail<NJ - 1>(n, k, qt, D, s, ld_s);
  }
}

// Scores^T [T, Rp] for one tile: st[j * Rp + r] = k_j . qt_r, over every 16-row block.
void tile_scores(const float* const* k, int T, const float* qt, int64_t Rp, int64_t D, float* st) {
  for (int64_t rb = 0; rb < Rp; rb += kRowBlock) {
    const float* q = qt + rb * D;  // block rb/16 starts at (rb/16) * D * 16
    int j = 0;
    for (; j + kQkKeys <= T; j += kQkKeys) qk_keys<kQkKeys>(k + j, q, D, st + j * Rp + rb, Rp);
    qk_keys_tail(T - j, k + j, q, D, st + j * Rp + rb, Rp);
  }
}

// acc[r * ld_acc + c0 + i] += sum_j pt[j * ld_p + r] * v[j][c0 + i], rows r in [0, 4),
// i in [0, 8 * NV).
template <int NV>
inline void pv_rows(const float* const* v, int64_t c0, int T, const float* pt, int64_t ld_p, float* acc,
                    int64_t ld_acc) {
  v8 a[kPvRows][NV];
  for (int r = 0; r < kPvRows; ++r)
    for (int n = 0; n < NV; ++n) a[r][n] = load8(acc + r * ld_acc + 8 * n);
  for (int j = 0; j < T; ++j) {
    v8 vv[NV];
    for (int n = 0; n < NV; ++n) vv[n] = load8(v[j] + c0 + 8 * n);
    const float* pj = pt + j * ld_p;
    for (int r = 0; r < kPvRows; ++r) {
      const v8 pb = splat8(pj[r]);
      for (int n = 0; n < NV; ++n) a[r][n] += pb * vv[n];
    }
  }
  for (int r = 0; r < kPvRows; ++r)
    for (int n = 0; n < NV; ++n) store8(acc + r * ld_acc + 8 * n, a[r][n]);
}

// acc [Rp, Dv] += P [Rp, T] . V [T, Dv] with P stored transposed (pt [T, Rp]).
void tile_pv(const float* const* v, int T, const float* pt, int64_t Rp, int64_t Dv, float* acc) {
  int64_t c = 0;
  for (; c + 24 <= Dv; c += 24)
    for (int64_t r = 0; r < Rp; r += kPvRows) pv_rows<3>(v, c, T, pt + r, Rp, acc + r * Dv + c, Dv);
  if (Dv - c >= 16) {
    for (int64_t r = 0; r < Rp; r += kPvRows) pv_rows<2>(v, c, T, pt + r, Rp, acc + r * Dv + c, Dv);
    c += 16;
  } else if (Dv - c >= 8) {
    for (int64_t r = 0; r < Rp; r += kPvRows) pv_rows<1>(v, c, T, pt + r, Rp, acc + r * Dv + c, Dv);
    c += 8;
  }
  if (c < Dv) {
    for (int64_t r = 0; r < Rp; ++r)
      for (int j = 0; j < T; ++j) {
        const float pj = pt[j * Rp + r];
        for (int64_t cc = c; cc < Dv; ++cc) acc[r * Dv + cc] += pj * v[j][cc];
      }
  }
}

// One unit of parallel work: positions [begin, end) of sequence b. slot < 0: the item covers
// the whole sequence and writes out/lse itself; otherwise it leaves (m, l, acc) in its slot.
struct Item {
  int64_t b, begin, end, slot;
};

// Per-split partial results, row-major over slots: m and l [slots, R], acc [slots, R, D_v].
struct Partials {
  std::vector<float> m, l, acc;
};

template <class T>
class Decoder {
 public:
  explicit Decoder(const MlaDecodeParams& p)
      : p_(p), R_(p.S_q * p.H), Rp_(ceil_div(R_, kRowBlock) * kRowBlock), D_(p.D_qk), Dv_(p.D_v) {}

  void run_item(const Item& it, Partials& part) const {
    const int64_t L = p_.seq_lens[it.b];
    std::vector<float> qt(Rp_ * D_, 0.0f), st(kTile * Rp_), acc(Rp_ * Dv_, 0.0f);
    std::vector<float> m(Rp_, kNoScore), l(Rp_, 0.0f), corr(Rp_);
    // Visible positions per row: query s sees [0, L - S_q + s]; padding rows see none.
    std::vector<int32_t> nvis(Rp_, 0);
    for (int64_t r = 0; r < R_; ++r) nvis[r] = static_cast<int32_t>(std::max<int64_t>(L - p_.S_q + r / p_.H + 1, 0));
    // Positions at or past `masked_from` are masked for some row (the first query sees the fewest).
    const int64_t masked_from = R_ > 0 ? nvis[0] : it.end;
    pack_queries(it.b, qt.data());

    std::vector<float> tile(std::is_same_v<T, float> ? 0 : kTile * D_);
    const float* rows[kTile];
    const int32_t* table = p_.block_table + it.b * p_.max_blocks;
    for (int64_t t0 = it.begin; t0 < it.end; t0 += kTile) {
      const int T_cur = static_cast<int>(std::min<int64_t>(kTile, it.end - t0));
      for (int j = 0; j < T_cur; ++j) {
        const T* row = cache_row(table, t0 + j);
        if constexpr (std::is_same_v<T, float>) {
          rows[j] = row;
        } else {
          float* dst = tile.data() + j * D_;
          for (int64_t d = 0; d < D_; ++d) dst[d] = to_float(row[d]);
          rows[j] = dst;
        }
      }
      prefetch_tile(table, t0 + kTile, std::min<int64_t>(it.end, t0 + 2 * kTile));
      tile_scores(rows, T_cur, qt.data(), Rp_, D_, st.data());
      softmax_update(t0, T_cur, nvis.data(), st.data(), m.data(), l.data(), corr.data());
      for (int64_t r = 0; r < R_; ++r) {
        if (corr[r] == 1.0f) continue;  // the common case once the running max has settled
        float* a = acc.data() + r * Dv_;
        for (int64_t c = 0; c < Dv_; ++c) a[c] *= corr[r];
      }
      if (t0 + T_cur > masked_from && masked_value_nonfinite(rows, std::max<int64_t>(masked_from - t0, 0), T_cur))
        tile_pv_visible(rows, t0, T_cur, nvis.data(), st.data(), acc.data());
      else
        tile_pv(rows, T_cur, st.data(), Rp_, Dv_, acc.data());
    }

    if (it.slot < 0) {
      for (int64_t r = 0; r < R_; ++r) write_row(it.b, r, m[r], l[r], acc.data() + r * Dv_);
      return;
    }
    std::copy_n(m.data(), R_, part.m.data() + it.slot * R_);
    std::copy_n(l.data(), R_, part.l.data() + it.slot * R_);
    std::copy_n(acc.data(), R_ * Dv_, part.acc.data() + it.slot * R_ * Dv_);
  }

  // Merges the n_slots splits of sequence b, row r: rescale each split to the common max.
  void merge_row(int64_t b, int64_t r, int64_t first_slot, int64_t n_slots, const Partials& part,
                 float* scratch) const {
    // Splits that saw nothing (l == 0) drop out; a NaN split (l or m NaN) makes the row NaN.
    float mx = kNoScore;
    for (int64_t i = 0; i < n_slots; ++i) {
      const int64_t k = (first_slot + i) * R_ + r;
      if (part.l[k] != 0.0f) mx = std::isnan(part.m[k]) || std::isnan(mx) ? NAN : std::max(mx, part.m[k]);
    }
    float lsum = 0.0f;
    std::fill_n(scratch, Dv_, 0.0f);
    for (int64_t i = 0; i < n_slots; ++i) {
      const int64_t k = (first_slot + i) * R_ + r;
      if (part.l[k] == 0.0f) continue;
      const float w = std::exp2(part.m[k] - mx);
      lsum += w * part.l[k];
      const float* a = part.acc.data() + k * Dv_;
      for (int64_t c = 0; c < Dv_; ++c) scratch[c] += w * a[c];
    }
    write_row(b, r, mx, lsum, scratch);
  }

 private:
  // Row of cache position pos for the sequence whose block_table row is `table`.
  const T* cache_row(const int32_t* table, int64_t pos) const {
    const int64_t block = table[pos / p_.block_size];
    return static_cast<const T*>(p_.kv_cache) + (block * p_.block_size + pos % p_.block_size) * D_;
  }

  // qt block k (rows 16k..16k+15) is [D, 16]: qt[k * D * 16 + d * 16 + i] = scale2 * q[16k+i][d].
  void pack_queries(int64_t b, float* qt) const {
    const T* q = static_cast<const T*>(p_.q) + b * R_ * D_;
    const float scale2 = p_.softmax_scale * kLog2e;
    for (int64_t r = 0; r < R_; ++r) {
      float* dst = qt + (r / kRowBlock) * D_ * kRowBlock + r % kRowBlock;
      for (int64_t d = 0; d < D_; ++d) dst[d * kRowBlock] = scale2 * to_float(q[r * D_ + d]);
    }
  }

  // Asks for the next tile's cache rows while this one computes: the kernel is compute-bound
  // on one core, so hiding the memory latency is what keeps long contexts at full speed.
  void prefetch_tile(const int32_t* table, int64_t from, int64_t to) const {
    const int64_t row_bytes = D_ * static_cast<int64_t>(sizeof(T));
    for (int64_t pos = from; pos < to; ++pos) {
      const char* row = reinterpret_cast<const char*>(cache_row(table, pos));
      for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(row + off, 0, 2);
    }
  }

  // Online softmax over one tile, rows in vector lanes. st holds log2-scaled scores on entry and
  // the probabilities P (0 where masked) on exit; corr receives each row's rescale factor.
  void softmax_update(int64_t t0, int T_cur, const int32_t* nvis, float* st, float* m, float* l, float* corr) const {
    for (int64_t r0 = 0; r0 < Rp_; r0 += 8) {
      vi8 lim;
      std::memcpy(&lim, nvis + r0, sizeof(lim));
      lim -= static_cast<int32_t>(t0);  // row sees tile column j iff j < lim
      v8 mt = splat8(kNoScore);
      for (int j = 0; j < T_cur; ++j) {
        const vi8 vis = (vi8{} + j) < lim;
        mt = vis ? max8(mt, load8(st + j * Rp_ + r0)) : mt;
      }
      const v8 m_old = load8(m + r0);
      const v8 m_new = max8(m_old, mt);
      v8 sum = v8{};
      for (int j = 0; j < T_cur; ++j) {
        float* sj = st + j * Rp_ + r0;
        const vi8 vis = (vi8{} + j) < lim;
        const v8 pj = vis ? exp2_nonpos(load8(sj) - m_new) : v8{};
        store8(sj, pj);
        sum += pj;
      }
      const v8 c = exp2_nonpos(m_old - m_new);
      store8(l + r0, load8(l + r0) * c + sum);
      store8(m + r0, m_new);
      store8(corr + r0, c);
    }
  }

  // A masked position enters tile_pv with P = 0, and 0 * NaN (or inf) = NaN would reach rows that
  // do not see it. Positions are masked inside a sequence only for its first S_q - 1 queries, so
  // only the tile rows [j0, T_cur) from the first masked position on are checked.
  bool masked_value_nonfinite(const float* const* rows, int64_t j0, int T_cur) const {
    for (int64_t j = j0; j < T_cur; ++j)
      for (int64_t c = 0; c < Dv_; ++c)
        if (!std::isfinite(rows[j][c])) return true;
    return false;
  }

  // tile_pv over each row's visible positions only (the rare tile that needs it).
  void tile_pv_visible(const float* const* rows, int64_t t0, int T_cur, const int32_t* nvis, const float* st,
                       float* acc) const {
    for (int64_t r = 0; r < R_; ++r) {
      const int64_t n = std::clamp<int64_t>(nvis[r] - t0, 0, T_cur);
      float* a = acc + r * Dv_;
      for (int64_t j = 0; j < n; ++j) {
        const float pj = st[j * Rp_ + r];
        for (int64_t c = 0; c < Dv_; ++c) a[c] += pj * rows[j][c];
      }
    }
  }

  // out[b, s, h, :] = acc / l and lse[b, h, s]; a row that saw nothing (l exactly 0: a visible
  // position adds at least 2^-126) gets 0 and -inf. As the float64 reference: a NaN score (m NaN)
  // gives NaN and NaN, a +inf score (m = +inf) NaN and +inf, a NaN or inf value a NaN or inf out.
  void write_row(int64_t b, int64_t r, float m, float l, const float* acc) const {
    const int64_t s = r / p_.H, h = r % p_.H;
    T* out = static_cast<T*>(p_.out) + (b * R_ + r) * Dv_;
    float* lse = p_.lse + (b * p_.H + h) * p_.S_q + s;
    if (std::isnan(m) || m == std::numeric_limits<float>::infinity()) {  // a NaN, or a +inf score
      for (int64_t c = 0; c < Dv_; ++c) from_float(NAN, out + c);
      *lse = m;  // NaN, or +inf as log-sum-exp over a +inf score is
      return;
    }
    if (l == 0.0f) {
      for (int64_t c = 0; c < Dv_; ++c) from_float(0.0f, out + c);
      *lse = -std::numeric_limits<float>::infinity();
      return;
    }
    const float inv = 1.0f / l;
    for (int64_t c = 0; c < Dv_; ++c) from_float(acc[c] * inv, out + c);
    *lse = (m + std::log2(l)) * kLn2;
  }

  const MlaDecodeParams& p_;
  const int64_t R_, Rp_, D_, Dv_;
};

template <class T>
void run(const MlaDecodeParams& p) {
  // Chunk length: enough items to keep every thread busy (two per thread evens out ragged
  // lengths), never shorter than kMinChunk, a whole number of tiles.
  int64_t total = 0;
  for (int64_t b = 0; b < p.B; ++b) total += p.seq_lens[b];
  const int threads = num_threads();
  int64_t chunk = std::numeric_limits<int64_t>::max();
  if (threads > 1) chunk = ceil_div(std::max(ceil_div(total, 2 * threads), kMinChunk), kTile) * kTile;

  std::vector<Item> items;
  std::vector<int64_t> first_slot(p.B, -1), n_slots(p.B, 0);
  int64_t slots = 0;
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t L = p.seq_lens[b];
    const int64_t n = L <= chunk ? 1 : ceil_div(L, chunk);  // (chunk may be INT64_MAX: no L + chunk)
    if (n == 1) {
      items.push_back({b, 0, L, -1});
      continue;
    }
    first_slot[b] = slots;
    n_slots[b] = n;
    for (int64_t i = 0; i < n; ++i) items.push_back({b, i * chunk, std::min(L, (i + 1) * chunk), slots++});
  }

  const Decoder<T> dec(p);
  const int64_t R = p.S_q * p.H;
  Partials part;
  part.m.resize(slots * R);
  part.l.resize(slots * R);
  part.acc.resize(slots * R * p.D_v);
  parallel_for(static_cast<int64_t>(items.size()), 1, [&](int64_t i) { dec.run_item(items[i], part); });
  if (slots == 0) return;

  std::vector<int64_t> split_bs;
  for (int64_t b = 0; b < p.B; ++b)
    if (n_slots[b] > 0) split_bs.push_back(b);
  const int64_t n_rows = static_cast<int64_t>(split_bs.size()) * R;
  parallel_for(n_rows, 64, [&](int64_t i) {
    std::vector<float> scratch(p.D_v);
    const int64_t b = split_bs[i / R];
    dec.merge_row(b, i % R, first_slot[b], n_slots[b], part, scratch.data());
  });
}

}  // namespace

void mla_decode_cpu(const MlaDecodeParams& p) {
  TS_KERNEL_ASSERT(p.B >= 0 && p.S_q >= 1 && p.H >= 1);
  TS_KERNEL_ASSERT(p.D_qk >= p.D_v && p.D_v >= 1);
  TS_KERNEL_ASSERT(p.block_size >= 1 && p.max_blocks >= 0);
  for (int64_t b = 0; b < p.B; ++b)
    TS_KERNEL_ASSERT(p.seq_lens[b] >= 0 && p.seq_lens[b] <= p.max_blocks * p.block_size);
  if (p.dtype == MlaDtype::kFloat32) {
    run<float>(p);
  } else if (p.dtype == MlaDtype::kBFloat16) {
    run<uint16_t>(p);
  } else {
    throw std::invalid_argument("mla_decode_cpu: dtype must be fp32 or bf16");
  }
}

}  // namespace ts::kern
