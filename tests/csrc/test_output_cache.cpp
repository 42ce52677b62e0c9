// The cache of large CPU op outputs (csrc/util/alloc.h): blocks come back after their tensor is
// freed and are reused; outputs made from reused blocks are fully written by the ops.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <thread>
#include <vector>

#include "csrc/ops/moe.h"
#include "csrc/util/alloc.h"

namespace {

TEST(OutputCache, SmallOutputsAreOrdinaryTensors) {
  const int64_t hits = ts::util::output_cache_hits();
  for (int i = 0; i < 3; ++i) {
    auto t = ts::util::empty_output({16, 16}, torch::kFloat);
    EXPECT_TRUE(t.storage().resizable());
  }
  EXPECT_EQ(ts::util::output_cache_hits(), hits);
}

TEST(OutputCache, FreedBlockIsReused) {
  const int64_t n = ts::util::kCachedOutputBytes / 4 + 1000;  // floats: just over the threshold
  void* first = nullptr;
  {
    auto t = ts::util::empty_output({n}, torch::kFloat);
    ASSERT_EQ(t.numel(), n);
    first = t.data_ptr();
    t.fill_(1.0f);  // writable over its whole length
  }
  EXPECT_GE(ts::util::output_cache_free_bytes(), n * 4);
  const int64_t hits = ts::util::output_cache_hits();
  auto again = ts::util::empty_output({n}, torch::kFloat);
  EXPECT_EQ(again.data_ptr(), first);
  EXPECT_EQ(ts::util::output_cache_hits(), hits + 1);
  // A block is not shared: a second live request gets other memory.
  auto other = ts::util::empty_output({n}, torch::kFloat);
  EXPECT_NE(other.data_ptr(), again.data_ptr());
  // Much smaller requests do not take a large block (at most 2x waste).
  { auto big = ts::util::empty_output({4 * n}, torch::kFloat); }
  auto small = ts::util::empty_output({n}, torch::kFloat);
  EXPECT_EQ(small.numel(), n);
}

// Threads taking and freeing blocks at once never share a live block: each fills its tensor
// with its own id and finds it unchanged after the others have run.
TEST(OutputCache, ConcurrentUseNeverSharesALiveBlock) {
  const int64_t n = ts::util::kCachedOutputBytes / 4 + 4096;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int id = 0; id < 4; ++id)
    threads.emplace_back([&, id] {
      for (int i = 0; i < 50; ++i) {
        auto t = ts::util::empty_output({n}, torch::kFloat);
        t.fill_(static_cast<float>(id));
        std::this_thread::yield();
        if (!torch::all(t == static_cast<float>(id)).item<bool>()) ++bad;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

// The ops' outputs on reused blocks: a first call fills the block with a poison value, the second
// call (same shapes, new inputs) must overwrite every element.
TEST(OutputCache, OpsOverwriteReusedBlocks) {
  torch::manual_seed(3);
  const int64_t T = 2048, H = 256, K = 4, E = 8;  // x_sorted is 8 MiB
  {
    auto [xs, s2t, offs] = ts::ops::moe_permute(torch::randn({T, H}), torch::randint(E, {T, K}, torch::kLong), E);
    xs.fill_(std::numeric_limits<float>::quiet_NaN());
    auto y = ts::ops::moe_unpermute(xs, s2t, torch::rand({T, K}));
    y.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  auto x = torch::randn({T, H});
  auto ids = torch::randint(E, {T, K}, torch::kLong);
  auto w = torch::rand({T, K});
  const int64_t hits = ts::util::output_cache_hits();
  auto [xs, s2t, offs] = ts::ops::moe_permute(x, ids, E);
  auto y = ts::ops::moe_unpermute(xs, s2t, w);
  EXPECT_GE(ts::util::output_cache_hits(), hits + 1);
  EXPECT_TRUE(torch::equal(xs, x.index_select(0, torch::div(s2t, K, "floor"))));
  auto ref = (x.unsqueeze(1) * w.unsqueeze(2)).sum(1);
  EXPECT_TRUE(torch::allclose(y, ref, 1e-5, 1e-5));
}

}  // namespace
