// BlockStore::stats(): residency, hits and misses per block key, stores,
// duplicates and evictions.
#include "gtest/gtest.h"
#include "kvstore/block_store.h"
#include "kvstore/test_util.h"

namespace latentkv::kvstore {
namespace {

using ::latentkv::kvstore::testing::KeysOf;
using ::latentkv::kvstore::testing::MakeChain;
using ::latentkv::kvstore::testing::SmallLayout;

TEST(BlockStoreStatsTest, CountsHitsMissesStoresAndEvictions) {
  BlockStore::Options o;
  o.capacity_bytes = 3 * 3 * 100;  // three blocks of 3 layers x 100 bytes
  o.epoch = 1;
  auto store = BlockStore::Create(o);
  ASSERT_TRUE(store.ok());
  BlockStore& s = **store;
  const KvLayout layout = SmallLayout();
  const auto chain = MakeChain(layout, 4, 0, 100);
  // No layout yet: every key misses.
  ASSERT_TRUE(s.Lookup(layout, KeysOf(chain)).ok());
  EXPECT_EQ(s.stats().lookup_miss_blocks, 4);
  EXPECT_EQ(s.stats().lookup_hit_blocks, 0);

  ASSERT_TRUE(s.Put(layout, {chain[0], chain[1]}).ok());
  ASSERT_TRUE(s.Put(layout, {chain[1]}).ok());  // a duplicate
  BlockStoreStats st = s.stats();
  EXPECT_EQ(st.blocks, 2);
  EXPECT_EQ(st.bytes_used, 2 * 300);
  EXPECT_EQ(st.capacity_bytes, 900);
  EXPECT_EQ(st.stored_blocks, 2);
  EXPECT_EQ(st.duplicate_blocks, 1);

  ASSERT_TRUE(s.Lookup(layout, KeysOf(chain)).ok());  // 2 hits, 2 misses
  auto got = s.Get(layout, KeysOf(chain));            // same for Get
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size(), 2u);
  st = s.stats();
  EXPECT_EQ(st.lookup_hit_blocks, 2);
  EXPECT_EQ(st.lookup_miss_blocks, 4 + 2);
  EXPECT_EQ(st.get_hit_blocks, 2);
  EXPECT_EQ(st.get_miss_blocks, 2);
  EXPECT_EQ(st.evicted_blocks, 0);

  // A separate chain of two blocks needs one eviction (the LRU leaf).
  const auto other = MakeChain(layout, 2, 1000, 100);
  ASSERT_TRUE(s.Put(layout, other).ok());
  st = s.stats();
  EXPECT_EQ(st.blocks, 3);
  EXPECT_EQ(st.evicted_blocks, 1);
  EXPECT_EQ(st.evicted_bytes, 300);
  EXPECT_EQ(st.stored_blocks, 4);
}

}  // namespace
}  // namespace latentkv::kvstore
