// The shared latent-KV store as a prefix cache, with real processes on
// loopback: latentkv-kvstore + two workers. A request publishes its blocks;
// a second request sharing a long prefix, routed to either worker, fetches
// them instead of recomputing them (hit tokens counted) and streams the
// same tokens as a worker without the store.
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

// A latentkv-kvstore process with 64 MiB; address empty if it did not start.
struct Store {
  std::string dir = MakeTempDir();
  Process process{{BinDir() + "/latentkv-kvstore", "--port=0",
                   "--port_file=" + dir + "/kvstore.addr", "--capacity_mb=64"},
                  dir + "/kvstore.log"};
  std::string address = WaitForLine(dir + "/kvstore.addr", 30);
};

TEST(PrefixStoreTest, SharedPrefixIsFetchedNotRecomputed) {
  const std::string base = LongStoryLine();
  ASSERT_FALSE(base.empty());
  const std::vector<std::string> prompts = {
      base + " The end.", base + " Then they went home", base + " She smiled"};
  std::vector<std::vector<int32_t>> want;
  {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    Cluster plain(o);
    for (const std::string& p : prompts) {
      StreamResult r = Generate(plain.stub(), Greedy(p, 40));
      ASSERT_TRUE(r.status.ok());
      want.push_back(r.tokens);
    }
  }
  Store store;
  const std::string& addr = store.address;
  ASSERT_FALSE(addr.empty());
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  // The store alone: a worker's local prefix cache would serve a repeated
  // prefix first (kv_routing_test covers that path).
  o.worker_args = {"--kvstore=" + addr, "--kvstore_block_tokens=16",
                   "--prefix_caching=false"};
  Cluster c(o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    StreamResult r = Generate(c.stub(), Greedy(prompts[i], 40));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens, want[i]) << prompts[i];
    // Publication is asynchronous: let it land before the next request.
    EXPECT_TRUE(WaitForStoreToSettle(addr));
  }
  const pb::WorkerStats a = c.WorkerStats(0), b = c.WorkerStats(1);
  // The first request published its blocks; the later two found the shared
  // prefix (at least the blocks of the common text) in the store.
  EXPECT_GT(a.kv_blocks_published() + b.kv_blocks_published(), 0u);
  EXPECT_GE(a.kv_prefix_hit_tokens() + b.kv_prefix_hit_tokens(), 2u * 64u);
  EXPECT_EQ(a.kv_store_errors() + b.kv_store_errors(), 0u);
  EXPECT_GE(a.kv_imports() + b.kv_imports(), 2u);
}

TEST(PrefixStoreTest, LocalPrefixCacheIsPreferredToTheStore) {
  const std::string base = LongStoryLine();
  ASSERT_FALSE(base.empty());
  Store store;
  const std::string& addr = store.address;
  ASSERT_FALSE(addr.empty());
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.worker_args = {"--kvstore=" + addr, "--kvstore_block_tokens=16",
                   "--page_size=16"};
  Cluster c(o);
  StreamResult first = Generate(c.stub(), Greedy(base + " The end.", 8));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  // The local cache's keys reach the RPC threads after the step that
  // indexed them: wait until the worker reports the blocks.
  for (int i = 0; i < 100 && c.WorkerStats(0).prefix_cached_blocks() == 0;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  StreamResult second = Generate(c.stub(), Greedy(base + " She smiled", 8));
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  const pb::WorkerStats s = c.WorkerStats(0);
  EXPECT_EQ(s.kv_prefix_lookups(), 1u) << "the second prompt's prefix is "
                                          "local: no store lookup";
  EXPECT_EQ(s.prefix_hits(), 1u);
  EXPECT_GE(s.prefix_hit_tokens(), 64u);
  EXPECT_EQ(s.kv_imports(), 0u);
}

}  // namespace
}  // namespace latentkv::testing
