#include "csrc/util/alloc.h"

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>

namespace ts::util {
namespace {

struct Block {
  void* ptr;
  int64_t bytes;
};

class OutputCache {
 public:
  OutputCache() {
    if (const char* env = std::getenv("TINYSEEK_OUTPUT_CACHE_MB")) capacity_ = std::max(0LL, std::atoll(env)) << 20;
  }
  // A block of at least `bytes`: a cached one when one fits, otherwise fresh memory.
  Block take(int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it)
        if (it->bytes >= bytes && it->bytes <= 2 * bytes && (best == free_.end() || it->bytes < best->bytes)) best = it;
      if (best != free_.end()) {
        Block b = *best;
        free_.erase(best);
        free_bytes_ -= b.bytes;
        ++hits_;
        return b;
      }
    }
    void* p = nullptr;
    if (posix_memalign(&p, 64, static_cast<size_t>(bytes)) != 0) throw std::bad_alloc();
    return {p, bytes};
  }

  // Keeps a freed block for reuse, evicting the oldest blocks beyond the capacity.
  void give_back(Block b) {
    std::deque<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (b.bytes > capacity_) {
        evicted.push_back(b);
      } else {
        free_.push_back(b);
        free_bytes_ += b.bytes;
        while (free_bytes_ > capacity_) {
          evicted.push_back(free_.front());
          free_bytes_ -= free_.front().bytes;
          free_.pop_front();
        }
      }
    }
    for (auto& e : evicted) std::free(e.ptr);
  }

  bool enabled() const { return capacity_ > 0; }
  int64_t free_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return free_bytes_;
  }
  int64_t hits() {
    std::lock_guard<std::mutex> lock(mu_);
    return hits_;
  }

 private:
  std::mutex mu_;
  std::deque<Block> free_;  // oldest first
  int64_t free_bytes_ = 0, hits_ = 0;
  int64_t capacity_ = int64_t{2048} << 20;
};

// Never destroyed: tensors holding cached blocks may outlive static destruction order.
OutputCache& cache() {
  static auto* c = new OutputCache();
  return *c;
}

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const int64_t bytes = c10::multiply_integers(sizes) *
                        static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
  if (!options.device().is_cpu() || bytes < kCachedOutputBytes || !cache().enabled()) return at::empty(sizes, options);
  const Block block = cache().take(bytes);
  return at::from_blob(
      block.ptr, sizes, [block](void*) { cache().give_back(block); }, options);
}

int64_t output_cache_free_bytes() { return cache().free_bytes(); }
int64_t output_cache_hits() { return cache().hits(); }

}  // namespace ts::util
