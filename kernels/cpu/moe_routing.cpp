// CPU twin of the MoE routing index build (contract in kernels/moe.h).
#include <algorithm>
#include <vector>

#include "kernels/common.h"
#include "kernels/moe.h"

namespace ts::kern {
namespace {

// Below this many slots per chunk the routing build is not worth a thread.
constexpr int64_t kMinSlotsPerChunk = 1 << 14;

}  // namespace

MoeRoutingStatus moe_routing_cpu(const MoeRoutingParams& p) {
  const int64_t T = p.tokens, K = p.topk, E = p.experts, M = T * K;
  TS_KERNEL_ASSERT(T >= 0 && K >= 0 && E >= 0);
  const int64_t* ids = p.topk_ids;

  // Slots are cut into contiguous chunks; counts[c][e] is how many slots of chunk c go to e.
  const int64_t chunks = std::clamp<int64_t>(M / kMinSlotsPerChunk, 1, num_threads());
  auto chunk_begin = [&](int64_t c) { return c * M / chunks; };
  std::vector<int64_t> counts(chunks * E, 0);  // [chunks, E]
  std::vector<int64_t> first_bad(chunks, -1);  // [chunks]
  parallel_for(chunks, 1, [&](int64_t c) {
    int64_t* cnt = counts.data() + c * E;
    for (int64_t s = chunk_begin(c), end = chunk_begin(c + 1); s < end; ++s) {
      const int64_t e = ids[s];
      if (e < 0 || e >= E) {
        first_bad[c] = s;
        return;
      }
      ++cnt[e];
    }
  });
  for (int64_t c = 0; c < chunks; ++c) {
    if (first_bad[c] >= 0) {  // chunks are in slot order, so the first hit is the first bad slot
      const int64_t s = first_bad[c];
      return MoeRoutingStatus{false, s / K, s % K, ids[s]};
    }
  }

  // Exclusive prefix over (expert, chunk): counts becomes each chunk's first write row per expert.
  int64_t running = 0;
  for (int64_t e = 0; e < E; ++e) {
    p.expert_offsets[e] = running;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t n = counts[c * E + e];
      counts[c * E + e] = running;
      running += n;
    }
  }
  p.expert_offsets[E] = running;

  // Each chunk scatters its slots in ascending order after all earlier chunks' rows of the same
  // expert: a stable sort by expert, identical for any number of chunks.
  parallel_for(chunks, 1, [&](int64_t c) {
    int64_t* pos = counts.data() + c * E;
    for (int64_t s = chunk_begin(c), end = chunk_begin(c + 1); s < end; ++s) {
      const int64_t r = pos[ids[s]]++;
      p.sorted_to_token[r] = s;
      p.token_to_sorted[s] = r;
    }
  });
  return MoeRoutingStatus{};
}

}  // namespace ts::kern
