#include "coordinator/kv_index.h"

#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/chain_key.h"

namespace latentkv::coordinator {
namespace {

std::vector<int32_t> Prompt(int n, int32_t first) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

KvIndexUpdate Stored(uint64_t seq, std::vector<uint64_t> keys) {
  KvIndexUpdate u;
  u.block_tokens = 4;
  u.first_seq = seq;
  u.last_seq = seq;
  u.events.push_back({true, std::move(keys)});
  return u;
}

TEST(KvIndexTest, OverlapIsTheLongestRunOfHeldBlocksFromTheStart) {
  KvIndex index;
  const auto prompt = Prompt(18, 7);  // 4 whole blocks of 4
  const auto keys = kvstore::PrefixKeys(prompt, 4);
  ASSERT_EQ(keys.size(), 4u);
  KvIndexUpdate snap;
  snap.block_tokens = 4;
  snap.snapshot = true;
  snap.last_seq = 9;
  snap.events.push_back({true, {keys[0], keys[1], keys[3]}});  // gap at 2
  EXPECT_FALSE(index.Apply("w1", snap).resync);
  EXPECT_EQ(index.Apply("w2", Stored(1, {keys[0]})).resync, true)
      << "events without a snapshot base have nothing to apply to";
  auto o = index.Overlaps(prompt);
  EXPECT_EQ(o.size(), 1u);
  EXPECT_EQ(o["w1"], 8);
  // Block 2 arrives: the run reaches block 3.
  const auto ack = index.Apply("w1", Stored(10, {keys[2]}));
  EXPECT_FALSE(ack.resync);
  EXPECT_EQ(ack.applied, 10u);
  EXPECT_EQ(index.Overlaps(prompt)["w1"], 16);
  // A different prompt sharing one block.
  auto other = prompt;
  other[5] = 1000;
  EXPECT_EQ(index.Overlaps(other)["w1"], 4);
}

TEST(KvIndexTest, GapsAskForAResyncAndResentEventsAreSkipped) {
  KvIndex index;
  const auto keys = kvstore::PrefixKeys(Prompt(8, 1), 4);
  KvIndexUpdate snap;
  snap.block_tokens = 4;
  snap.snapshot = true;
  snap.last_seq = 0;
  ASSERT_FALSE(index.Apply("w", snap).resync);
  ASSERT_FALSE(index.Apply("w", Stored(1, {keys[0]})).resync);
  // Event 2 was lost: event 3 cannot be applied.
  auto ack = index.Apply("w", Stored(3, {keys[1]}));
  EXPECT_TRUE(ack.resync);
  EXPECT_EQ(ack.applied, 1u);
  EXPECT_EQ(index.blocks("w"), 1);
  // A resent update (events 1..2) applies only event 2.
  KvIndexUpdate resent;
  resent.block_tokens = 4;
  resent.first_seq = 1;
  resent.last_seq = 2;
  resent.events = {{false, {keys[0]}}, {true, {keys[1]}}};
  ack = index.Apply("w", resent);
  EXPECT_FALSE(ack.resync);
  EXPECT_EQ(ack.applied, 2u);
  EXPECT_EQ(index.blocks("w"), 2) << "event 1 (a removal) must not replay";
  // A removal event, then the worker goes away.
  KvIndexUpdate removed;
  removed.block_tokens = 4;
  removed.first_seq = 3;
  removed.last_seq = 3;
  removed.events = {{false, {keys[1]}}};
  EXPECT_FALSE(index.Apply("w", removed).resync);
  EXPECT_EQ(index.blocks("w"), 1);
  index.Remove("w");
  EXPECT_EQ(index.blocks("w"), 0);
  EXPECT_TRUE(index.Overlaps(Prompt(8, 1)).empty());
}

TEST(KvIndexTest, WorkersWithDifferentBlockSizesHashTheirOwnBlocks) {
  KvIndex index;
  const auto prompt = Prompt(16, 3);
  for (int32_t bt : {4, 8}) {
    KvIndexUpdate snap;
    snap.block_tokens = bt;
    snap.snapshot = true;
    snap.events.push_back({true, kvstore::PrefixKeys(prompt, bt)});
    ASSERT_FALSE(index.Apply("w" + std::to_string(bt), snap).resync);
  }
  auto o = index.Overlaps(prompt);
  EXPECT_EQ(o["w4"], 16);
  EXPECT_EQ(o["w8"], 16);
  // A block-size change without a snapshot is refused.
  EXPECT_TRUE(index
                  .Apply("w4",
                         [] {
                           KvIndexUpdate u;
                           u.block_tokens = 8;
                           u.first_seq = 1;
                           return u;
                         }())
                  .resync);
}

TEST(KvIndexTest, PredictedBlocksCountUntilTheyExpireOrAreEvicted) {
  KvIndex index(KvIndexOptions{.predict_ttl = std::chrono::milliseconds(100)});
  const auto prompt = Prompt(13, 40);  // 3 whole blocks of 4
  const auto t0 = std::chrono::steady_clock::now();
  // Unknown worker (no block size yet): nothing to predict.
  index.Predict("w", prompt, t0);
  EXPECT_TRUE(index.Overlaps(prompt, t0).empty());
  KvIndexUpdate snap;
  snap.block_tokens = 4;
  snap.snapshot = true;
  ASSERT_FALSE(index.Apply("w", snap).resync);
  index.Predict("w", prompt, t0);
  EXPECT_EQ(index.Overlaps(prompt, t0)["w"], 12);
  EXPECT_EQ(index.blocks("w"), 0) << "predictions are not held blocks";
  // The worker's event confirms block 0; the rest expire.
  const auto keys = kvstore::PrefixKeys(prompt, 4);
  ASSERT_FALSE(index.Apply("w", Stored(1, {keys[0]})).resync);
  const auto later = t0 + std::chrono::milliseconds(150);
  EXPECT_EQ(index.Overlaps(prompt, later)["w"], 4);
  // An eviction event ends a prediction at once.
  index.Predict("w", prompt, later);
  KvIndexUpdate removed;
  removed.block_tokens = 4;
  removed.first_seq = 2;
  removed.last_seq = 2;
  removed.events = {{false, {keys[0]}}};
  ASSERT_FALSE(index.Apply("w", removed).resync);
  EXPECT_TRUE(index.Overlaps(prompt, later).empty());
  // A ttl of 0 turns prediction off.
  KvIndex off(KvIndexOptions{.predict_ttl = std::chrono::milliseconds(0)});
  ASSERT_FALSE(off.Apply("w", snap).resync);
  off.Predict("w", prompt, t0);
  EXPECT_TRUE(off.Overlaps(prompt, t0).empty());
}

}  // namespace

// One PromptKeys hashes each block size once and matches the span calls.
TEST(KvIndexTest, PromptKeysAreHashedOncePerBlockSize) {
  const std::vector<int32_t> prompt = Prompt(20, 3);
  const PromptKeys keys(prompt);
  const auto* first = &keys.For(4);
  EXPECT_EQ(first, &keys.For(4));
  EXPECT_EQ(*first, kvstore::PrefixKeys(prompt, 4));
  EXPECT_EQ(keys.For(8), kvstore::PrefixKeys(prompt, 8));
  EXPECT_EQ(first, &keys.For(4));  // still the same vector
}

}  // namespace latentkv::coordinator
