// Allocation of large CPU op outputs.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace ts::util {

// Outputs at least this large are served from the output cache.
inline constexpr int64_t kCachedOutputBytes = int64_t{4} << 20;

// An uninitialized tensor like at::empty(sizes, options). On CPU, from kCachedOutputBytes up, the
// memory comes from a small cache of blocks that earlier outputs freed, so that an op called once
// per training step with the same shapes reuses memory whose pages are already mapped.
//
// Why: glibc returns blocks this large to the kernel on free (they are mmap'ed), so each call's
// output is touched for the first time by the op itself, and first touch is slow on virtual
// machines. Measured on the 2-core development VM: 2.5 GB/s for fresh 4 KiB pages (one thread);
// page faults were the largest cost of the MoE permute and a sixth of a grouped GEMM. This is
// what caching allocators (torch's CUDA allocator, jemalloc, tcmalloc) do; torch's default CPU
// allocator does not.
//
// The cache holds at most TINYSEEK_OUTPUT_CACHE_MB MiB of free blocks (default 2048; 0 turns it
// off), oldest evicted first; a block is reused for a request of at least half its size.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

// Free bytes the cache holds now, and the total of its hits (for tests and benchmarks).
int64_t output_cache_free_bytes();
int64_t output_cache_hits();

}  // namespace ts::util
