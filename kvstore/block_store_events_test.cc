// BlockStore's event feed: order, ring overflow, epochs, waiting, Close, and
// replaying events onto a snapshot.
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/block_store.h"
#include "kvstore/test_util.h"

namespace latentkv::kvstore {
namespace {

using ::latentkv::kvstore::testing::MakeBlock;
using ::latentkv::kvstore::testing::MakeChain;
using ::latentkv::kvstore::testing::SmallLayout;

std::unique_ptr<BlockStore> NewStore(int64_t capacity, size_t max_events) {
  BlockStore::Options o;
  o.capacity_bytes = capacity;
  o.max_events = max_events;
  o.epoch = 99;
  return std::move(*BlockStore::Create(o));
}

TEST(BlockStoreEventsTest, StoredThenRemovedInSeqOrder) {
  const KvLayout l = SmallLayout();
  auto store = NewStore(3 * 30, 100);
  const std::vector<Block> chain = MakeChain(l, 3, 0, 10);
  ASSERT_TRUE(store->Put(l, chain).ok());
  const Block d = MakeBlock(l, 0, 500, 10);
  ASSERT_TRUE(store->Put(l, {d}).ok());  // evicts the chain's leaf
  auto ev = store->EventsAfter(0, 0, 100);
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->size(), 5u);
  for (size_t i = 0; i < ev->size(); ++i) EXPECT_EQ((*ev)[i].seq, i + 1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ((*ev)[i].kind, EventKind::kStored);
    EXPECT_EQ((*ev)[i].key, chain[i].key);
    EXPECT_EQ((*ev)[i].parent, chain[i].parent);
    EXPECT_EQ((*ev)[i].bytes, 30);
  }
  EXPECT_EQ((*ev)[3].kind, EventKind::kRemoved);
  EXPECT_EQ((*ev)[3].key, chain[2].key);
  EXPECT_EQ((*ev)[3].parent, chain[1].key);
  EXPECT_EQ((*ev)[4].kind, EventKind::kStored);
  EXPECT_EQ((*ev)[4].key, d.key);
  // Partial reads continue where they left off.
  auto tail = store->EventsAfter(3, 99, 1);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 1u);
  EXPECT_EQ((*tail)[0].seq, 4u);
  EXPECT_TRUE(store->EventsAfter(5, 0, 10)->empty());
}

TEST(BlockStoreEventsTest, RingOverflowIsOutOfRange) {
  const KvLayout l = SmallLayout();
  auto store = NewStore(1 << 20, 4);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(store->Put(l, {MakeBlock(l, 0, i * 10, 1)}).ok());
  }
  // Events 7..10 are kept: reading after 6 works, after 5 does not.
  auto ok = store->EventsAfter(6, 0, 100);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->size(), 4u);
  EXPECT_EQ(store->EventsAfter(5, 0, 100).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(store->EventsAfter(0, 0, 100).status().code(),
            absl::StatusCode::kOutOfRange);
  // Ahead of the store (e.g. the store restarted) and foreign epochs.
  EXPECT_EQ(store->EventsAfter(11, 0, 100).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(store->EventsAfter(8, 12345, 100).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(
      store->WaitForEvents(11, 0, 10, absl::InfiniteFuture()).status().code(),
      absl::StatusCode::kOutOfRange);
}

TEST(BlockStoreEventsTest, WaitForEventsWakesOnPutTimesOutAndEndsOnClose) {
  const KvLayout l = SmallLayout();
  auto store = NewStore(1 << 20, 100);
  auto none =
      store->WaitForEvents(0, 0, 10, absl::Now() + absl::Milliseconds(20));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(store->Put(l, {MakeBlock(l, 0, 0, 4)}).ok());
  });
  auto got = store->WaitForEvents(0, 99, 10, absl::Now() + absl::Seconds(30));
  writer.join();
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);

  absl::Status waited;
  std::thread waiter([&] {
    waited = store->WaitForEvents(1, 0, 10, absl::InfiniteFuture()).status();
  });
  absl::SleepFor(absl::Milliseconds(50));
  store->Close();
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kUnavailable);
  // Other operations keep working after Close.
  EXPECT_TRUE(store->Put(l, {MakeBlock(l, 0, 50, 4)}).ok());
}

TEST(BlockStoreEventsTest, SnapshotPlusEventsReproducesTheStore) {
  const KvLayout l = SmallLayout();
  auto store = NewStore(10 * 30, 1000);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(store->Put(l, MakeChain(l, 2, i * 100, 10)).ok());
  }
  const StoreSnapshot before = store->Snapshot();
  EXPECT_EQ(before.seq, 8u);
  EXPECT_EQ(before.epoch, 99u);
  absl::flat_hash_map<BlockKey, BlockKey> index;
  for (const auto& e : before.blocks) index[e.key] = e.parent;
  for (int i = 4; i < 9; ++i) {
    ASSERT_TRUE(store->Put(l, MakeChain(l, 2, i * 100, 10)).ok());
  }
  auto ev = store->EventsAfter(before.seq, before.epoch, 1000);
  ASSERT_TRUE(ev.ok());
  for (const Event& e : *ev) {
    if (e.kind == EventKind::kStored) {
      index[e.key] = e.parent;
    } else {
      index.erase(e.key);
    }
  }
  const StoreSnapshot after = store->Snapshot();
  absl::flat_hash_map<BlockKey, BlockKey> want;
  for (const auto& e : after.blocks) want[e.key] = e.parent;
  EXPECT_EQ(index, want);
  EXPECT_EQ(after.blocks.size(), 10u);
  EXPECT_EQ(after.seq, before.seq + ev->size());
}

}  // namespace
}  // namespace latentkv::kvstore
