// CUDA twin of kernels/cpu/moe_routing.cpp: the MoE routing index build.
//
// Bitwise equal to the CPU twin by construction: both compute the unique stable sort of the slots
// s = 0..M-1 by expert id. Here the keys are the expert ids, the values the slot indices in
// ascending order, and cub::DeviceRadixSort is stable, so rows of one expert keep ascending slot
// order. Offsets come from a binary search of the sorted keys (no atomics, no order dependence).
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>

#include "kernels/common.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/moe.h"

namespace ts::kern {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kAlign = 256;

int64_t align_up(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Keys need bits for 0..E (out-of-range ids become E so the sort stays well defined).
int key_bits(int64_t E) {
  int bits = 1;
  while ((int64_t{1} << bits) <= E) ++bits;
  return bits;
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);  // grid-stride beyond
}

// Workspace sections, each kAlign-aligned: keys_in [M] u32, keys_out [M] u32, slots [M] i64, cub temp.
struct Workspace {
  uint32_t* keys_in;
  uint32_t* keys_out;
  int64_t* slots;
  void* temp;
  size_t temp_bytes;
};

size_t cub_temp_bytes(int64_t M, int64_t E) {
  size_t bytes = 0;
  TS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                                static_cast<uint32_t*>(nullptr), static_cast<const int64_t*>(nullptr),
                                                static_cast<int64_t*>(nullptr), M, 0, key_bits(E)));
  return bytes;
}

Workspace carve(void* base, int64_t M, int64_t E) {
  char* p = static_cast<char*>(base);
  Workspace w;
  w.keys_in = reinterpret_cast<uint32_t*>(p);
  p += align_up(M * int64_t{sizeof(uint32_t)});
  w.keys_out = reinterpret_cast<uint32_t*>(p);
  p += align_up(M * int64_t{sizeof(uint32_t)});
  w.slots = reinterpret_cast<int64_t*>(p);
  p += align_up(M * int64_t{sizeof(int64_t)});
  w.temp = p;
  w.temp_bytes = cub_temp_bytes(M, E);
  return w;
}

// keys[s] = expert of slot s (E when out of range), slots[s] = s; the first bad slot is kept with an
// unsigned atomicMin on error[0], which starts as -1 (all ones, the unsigned maximum).
__global__ void make_keys_kernel(const int64_t* __restrict__ ids, uint32_t* __restrict__ keys,
                                 int64_t* __restrict__ slots, int64_t* __restrict__ error, int64_t M, int64_t E) {
  for (int64_t s = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; s < M; s += int64_t{gridDim.x} * blockDim.x) {
    const int64_t e = ids[s];
    const bool ok = e >= 0 && e < E;
    keys[s] = static_cast<uint32_t>(ok ? e : E);
    slots[s] = s;
    if (!ok) atomicMin(reinterpret_cast<unsigned long long*>(error), static_cast<unsigned long long>(s));
  }
}

// token_to_sorted is the inverse permutation of sorted_to_token.
__global__ void invert_kernel(const int64_t* __restrict__ sorted_to_token, int64_t* __restrict__ token_to_sorted,
                              int64_t M) {
  for (int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; r < M; r += int64_t{gridDim.x} * blockDim.x)
    token_to_sorted[sorted_to_token[r]] = r;
}

// offsets[e] = first sorted row whose key is >= e (so offsets[E] = M when every id is valid);
// thread 0 also fills error[1] with the offending id.
__global__ void offsets_kernel(const uint32_t* __restrict__ keys, int64_t* __restrict__ offsets,
                               const int64_t* __restrict__ ids, int64_t* __restrict__ error, int64_t M, int64_t E) {
  const int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (e == 0) error[1] = error[0] >= 0 ? ids[error[0]] : 0;
  if (e > E) return;
  int64_t lo = 0, hi = M;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (static_cast<int64_t>(keys[mid]) < e)
      lo = mid + 1;
    else
      hi = mid;
  }
  offsets[e] = lo;
}

}  // namespace

int64_t moe_routing_cuda_workspace(int64_t tokens, int64_t topk, int64_t experts) {
  const int64_t M = tokens * topk;
  return 2 * align_up(M * int64_t{sizeof(uint32_t)}) + align_up(M * int64_t{sizeof(int64_t)}) +
         align_up(static_cast<int64_t>(cub_temp_bytes(M, experts)));
}

void moe_routing_cuda(const MoeRoutingParams& p, int64_t* error, void* workspace, int64_t workspace_bytes,
                      cudaStream_t stream) {
  const int64_t M = p.tokens * p.topk, E = p.experts;
  TS_KERNEL_ASSERT(M >= 0 && E >= 0 && E < (int64_t{1} << 31));
  TS_KERNEL_ASSERT(workspace_bytes >= moe_routing_cuda_workspace(p.tokens, p.topk, E));
  TS_KERNEL_ASSERT(reinterpret_cast<uintptr_t>(workspace) % kAlign == 0);
  TS_CUDA_CHECK(cudaMemsetAsync(error, 0xff, sizeof(int64_t), stream));  // error[0] = -1: no bad slot
  const Workspace ws = carve(workspace, M, E);
  if (M > 0) {
    make_keys_kernel<<<grid_for(M), kThreads, 0, stream>>>(p.topk_ids, ws.keys_in, ws.slots, error, M, E);
    TS_CUDA_CHECK_LAUNCH();
    size_t temp_bytes = ws.temp_bytes;
    TS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(ws.temp, temp_bytes, ws.keys_in, ws.keys_out, ws.slots,
                                                  p.sorted_to_token, M, 0, key_bits(E), stream));
    invert_kernel<<<grid_for(M), kThreads, 0, stream>>>(p.sorted_to_token, p.token_to_sorted, M);
    TS_CUDA_CHECK_LAUNCH();
  }
  const unsigned blocks = static_cast<unsigned>((E + 1 + kThreads - 1) / kThreads);
  offsets_kernel<<<blocks, kThreads, 0, stream>>>(ws.keys_out, p.expert_offsets, p.topk_ids, error, M, E);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace ts::kern
