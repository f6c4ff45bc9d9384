#include "kvstore/block_store.h"

#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/test_util.h"

namespace latentkv::kvstore {
namespace {

using ::latentkv::kvstore::testing::KeysOf;
using ::latentkv::kvstore::testing::MakeBlock;
using ::latentkv::kvstore::testing::MakeChain;
using ::latentkv::kvstore::testing::SmallLayout;
using ::testing::HasSubstr;

std::unique_ptr<BlockStore> NewStore(int64_t capacity, size_t max_events = 1024,
                                     size_t max_blocks = 1 << 20) {
  BlockStore::Options o;
  o.capacity_bytes = capacity;
  o.max_events = max_events;
  o.max_blocks = max_blocks;
  o.epoch = 7;
  auto s = BlockStore::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

TEST(BlockStoreTest, CreateRejectsBadOptions) {
  BlockStore::Options o;
  o.capacity_bytes = 0;
  EXPECT_FALSE(BlockStore::Create(o).ok());
  o = {};
  o.max_events = 0;
  EXPECT_FALSE(BlockStore::Create(o).ok());
  o = {};
  o.layout = SmallLayout();
  o.layout->d_qk.pop_back();
  EXPECT_EQ(BlockStore::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = {};
  auto s = BlockStore::Create(o);
  ASSERT_TRUE(s.ok());
  EXPECT_NE((*s)->epoch(), 0u);  // random when not given
}

TEST(BlockStoreTest, PutGetRoundTripsIncludingAbsentLayers) {
  auto store = NewStore(1 << 20);
  const KvLayout l = SmallLayout();
  std::vector<Block> chain = MakeChain(l, 3, 10, 100);
  chain[1] = MakeBlock(l, chain[0].key, 14, 100, /*drop_layer1=*/true);
  chain[2] = MakeBlock(l, chain[1].key, 18, 100);
  chain[2].layers.pop_back();  // layer 2 not listed at all
  const std::vector<Block> want = chain;
  auto put = store->Put(l, chain);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->stored, 3);
  EXPECT_EQ(store->bytes_used(), 300 + 200 + 200);

  auto got = store->Get(l, KeysOf(want));
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const Block& g = *(*got)[i];
    EXPECT_EQ(g.key, want[i].key);
    EXPECT_EQ(g.parent, want[i].parent);
    EXPECT_EQ(g.tokens, want[i].tokens);
    ASSERT_EQ(g.layers.size(), want[i].layers.size());
    for (size_t j = 0; j < g.layers.size(); ++j) {
      EXPECT_EQ(g.layers[j].layer, want[i].layers[j].layer);
      EXPECT_EQ(g.layers[j].present, want[i].layers[j].present);
      EXPECT_EQ(g.layers[j].data, want[i].layers[j].data);
    }
  }
  EXPECT_FALSE((*got)[1]->layers[1].present);
}

TEST(BlockStoreTest, LookupAndGetReturnTheLongestResidentPrefix) {
  auto store = NewStore(1 << 20);
  const KvLayout l = SmallLayout();
  const std::vector<Block> chain = MakeChain(l, 5, 0, 10);
  ASSERT_TRUE(store->Put(l, {chain.begin(), chain.begin() + 3}).ok());
  auto r = store->Lookup(l, KeysOf(chain));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->num_hits, 3);
  EXPECT_EQ(r->bytes, 90);
  auto g = store->Get(l, KeysOf(chain));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->size(), 3u);
  // A miss in front hides what follows.
  std::vector<BlockKey> keys = KeysOf(chain);
  keys.insert(keys.begin(), BlockKey{12345});
  EXPECT_EQ(store->Lookup(l, keys)->num_hits, 0);
  // Duplicates are refreshed, not stored twice, and emit nothing.
  const uint64_t seq = store->last_seq();
  auto again = store->Put(l, {chain.begin(), chain.begin() + 4});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->duplicates, 3);
  EXPECT_EQ(again->stored, 1);
  EXPECT_EQ(store->last_seq(), seq + 1);
}

TEST(BlockStoreTest, RejectsMalformedBlocks) {
  auto store = NewStore(1 << 20);
  const KvLayout l = SmallLayout();
  struct Case {
    std::function<void(Block&)> mutate;
    absl::StatusCode code;
    std::string expect;
  };
  const Case cases[] = {
      {[](Block& b) { b.key ^= 1; }, absl::StatusCode::kInvalidArgument,
       "key does not match"},
      {[](Block& b) { b.tokens[2] += 1; }, absl::StatusCode::kInvalidArgument,
       "key does not match"},
      {[](Block& b) { b.tokens.push_back(1); },
       absl::StatusCode::kInvalidArgument, "5 tokens, block_tokens is 4"},
      {[](Block& b) { b.layers[2].layer = 3; },
       absl::StatusCode::kInvalidArgument, "layer 3 >= num_layers 3"},
      {[](Block& b) { b.layers[2].layer = 0; },
       absl::StatusCode::kInvalidArgument, "layer 0 listed twice"},
      {[](Block& b) { b.layers[1].present = false; },
       absl::StatusCode::kInvalidArgument, "absent layer 1 carries data"},
  };
  for (const Case& c : cases) {
    Block b = MakeBlock(l, 0, 1, 8);
    c.mutate(b);
    auto r = store->Put(l, {b});
    EXPECT_EQ(r.status().code(), c.code) << c.expect;
    EXPECT_THAT(r.status().message(), HasSubstr(c.expect));
  }
  EXPECT_EQ(store->num_blocks(), 0u);
  // A bad block anywhere refuses the whole request.
  std::vector<Block> chain = MakeChain(l, 3, 0, 8);
  chain[2].key += 1;
  EXPECT_FALSE(store->Put(l, chain).ok());
  EXPECT_EQ(store->num_blocks(), 0u);
  EXPECT_EQ(store->last_seq(), 0u);
}

// Payloads carry their checksum: a Put whose bytes changed on the way is
// refused whole (nothing stored), and what Get returns verifies.
TEST(BlockStoreTest, PayloadsMustMatchTheirChecksums) {
  auto store = std::move(*BlockStore::Create({}));
  std::vector<Block> chain = MakeChain(SmallLayout(), 2, 0, 64);
  std::vector<Block> tampered = chain;
  tampered[1].layers[0].data[5] ^= 0x40;  // one flipped bit
  auto r = store->Put(SmallLayout(), tampered);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsDataLoss(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("checksum"), std::string::npos);
  EXPECT_EQ(store->num_blocks(), 0u);
  ASSERT_TRUE(store->Put(SmallLayout(), chain).ok());
  auto got = store->Get(SmallLayout(), {chain[0].key, chain[1].key});
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 2u);
  for (const auto& b : *got) {
    for (const LayerPayload& l : b->layers) EXPECT_TRUE(l.Intact());
  }
}

TEST(BlockStoreTest, LayerPayloadBound) {
  BlockStore::Options o;
  o.max_layer_bytes = 64;
  auto store = std::move(*BlockStore::Create(o));
  EXPECT_TRUE(
      store->Put(SmallLayout(), {MakeBlock(SmallLayout(), 0, 0, 64)}).ok());
  auto r = store->Put(SmallLayout(), {MakeBlock(SmallLayout(), 0, 9, 65)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("max_layer_bytes"));
}

TEST(BlockStoreTest, MissingParentIsRefused) {
  auto store = NewStore(1 << 20);
  const KvLayout l = SmallLayout();
  const std::vector<Block> chain = MakeChain(l, 3, 0, 8);
  auto r = store->Put(l, {chain[1], chain[2]});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("not resident"));
  EXPECT_EQ(store->num_blocks(), 0u);
  // Parents earlier in the request, or resident, are fine.
  ASSERT_TRUE(store->Put(l, {chain[0], chain[1]}).ok());
  ASSERT_TRUE(store->Put(l, {chain[2]}).ok());
  EXPECT_EQ(store->num_blocks(), 3u);
}

TEST(BlockStoreTest, LayoutIsFixedByFirstPutAndMismatchesAreRefused) {
  auto store = NewStore(1 << 20);
  const KvLayout l = SmallLayout();
  KvLayout other = l;
  other.d_vo[2] = 4;
  // Before any Put: nothing resident, nothing fixed.
  EXPECT_EQ(store->Lookup(other, {1})->num_hits, 0);
  EXPECT_TRUE(store->Snapshot().layout == std::nullopt);
  ASSERT_TRUE(store->Put(l, {MakeBlock(l, 0, 0, 8)}).ok());
  EXPECT_TRUE(store->Snapshot().layout == l);
  for (auto code :
       {store->Put(other, {MakeBlock(other, 0, 50, 8)}).status(),
        store->Lookup(other, {1}).status(), store->Get(other, {1}).status()}) {
    EXPECT_EQ(code.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(code.message(), HasSubstr("d_vo[2] is 4, store holds 8"));
  }
  // A layout configured at start refuses the first Put too.
  BlockStore::Options o;
  o.layout = other;
  auto fixed = std::move(*BlockStore::Create(o));
  auto r = fixed->Put(l, {MakeBlock(l, 0, 0, 8)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("d_vo[2]"));
  // An invalid first layout is INVALID_ARGUMENT and fixes nothing.
  KvLayout bad = l;
  bad.block_tokens = 0;
  auto fresh = NewStore(1 << 20);
  EXPECT_EQ(fresh->Put(bad, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(fresh->Put(l, {}).ok());
}

TEST(BlockStoreTest, BlockLargerThanCapacityIsResourceExhausted) {
  auto store = NewStore(1000);
  const KvLayout l = SmallLayout();
  auto r = store->Put(l, {MakeBlock(l, 0, 0, 334)});  // 1002 bytes
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(store->Put(l, {MakeBlock(l, 0, 0, 333)}).ok());  // 999 bytes
}

TEST(BlockStoreTest, EvictsLeastRecentlyUsedLeavesFirst) {
  const KvLayout l = SmallLayout();
  auto store = NewStore(4 * 300);  // four blocks of 300 bytes
  const std::vector<Block> chain = MakeChain(l, 3, 0, 100);  // A-B-C
  const Block d = MakeBlock(l, 0, 1000, 100);
  ASSERT_TRUE(store->Put(l, chain).ok());
  ASSERT_TRUE(store->Put(l, {d}).ok());
  // A is the least recently used block, but only leaves (C, D) may go: C.
  ASSERT_TRUE(store->Put(l, {MakeBlock(l, 0, 2000, 100)}).ok());
  EXPECT_FALSE(store->Contains(chain[2].key));
  EXPECT_TRUE(store->Contains(chain[0].key));
  // B is a leaf now and older than D and E.
  ASSERT_TRUE(store->Put(l, {MakeBlock(l, 0, 3000, 100)}).ok());
  EXPECT_FALSE(store->Contains(chain[1].key));
  EXPECT_TRUE(store->Contains(chain[0].key));
  EXPECT_TRUE(store->Contains(d.key));
  // Get refreshes: touch A, then the next eviction takes D.
  ASSERT_EQ(store->Get(l, {chain[0].key})->size(), 1u);
  ASSERT_TRUE(store->Put(l, {MakeBlock(l, 0, 4000, 100)}).ok());
  EXPECT_FALSE(store->Contains(d.key));
  EXPECT_TRUE(store->Contains(chain[0].key));
  // Lookup is a probe: it does not refresh.
  const Block e = MakeBlock(l, 0, 2000, 100);
  ASSERT_EQ(store->Lookup(l, {e.key})->num_hits, 1);
  ASSERT_TRUE(store->Put(l, {MakeBlock(l, 0, 5000, 100)}).ok());
  EXPECT_FALSE(store->Contains(e.key));
}

TEST(BlockStoreTest, NeverEvictsTheRequestsOwnChain) {
  const KvLayout l = SmallLayout();
  auto store = NewStore(2 * 300);
  const std::vector<Block> chain = MakeChain(l, 3, 0, 100);
  ASSERT_TRUE(store->Put(l, {chain[0], chain[1]}).ok());
  // C needs its parent B (pinned) and B needs A: no room.
  auto r = store->Put(l, {chain[2]});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(store->Contains(chain[0].key));
  EXPECT_TRUE(store->Contains(chain[1].key));
  // The whole chain in one request: A and B stored, C refused.
  auto fresh = NewStore(2 * 300);
  r = fresh->Put(l, chain);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("2 blocks stored"));
  EXPECT_EQ(fresh->Lookup(l, KeysOf(chain))->num_hits, 2);
}

TEST(BlockStoreTest, MaxBlocksBoundsTheCount) {
  const KvLayout l = SmallLayout();
  auto store = NewStore(1 << 20, 1024, /*max_blocks=*/3);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(store->Put(l, {MakeBlock(l, 0, i * 100, 0)}).ok());
    EXPECT_LE(store->num_blocks(), 3u);
  }
}

// Every resident block's chain is resident, parents come first in the
// snapshot, and the payload bytes add up and stay within capacity.
void CheckInvariants(const BlockStore& store) {
  const StoreSnapshot s = store.Snapshot();
  absl::flat_hash_set<BlockKey> seen;
  int64_t bytes = 0;
  for (const SnapshotEntry& e : s.blocks) {
    if (e.parent != 0) {
      ASSERT_TRUE(seen.contains(e.parent)) << "orphan " << e.key;
    }
    seen.insert(e.key);
    bytes += e.bytes;
  }
  ASSERT_EQ(bytes, s.bytes_used);
  ASSERT_LE(s.bytes_used, s.capacity_bytes);
}

TEST(BlockStoreTest, RandomPutsNeverExceedCapacityOrBreakChains) {
  const KvLayout l = SmallLayout();
  const int64_t capacity = 20000;
  auto store = NewStore(capacity, 1 << 16);
  std::mt19937 rng(123);
  int stored = 0, refused = 0;
  for (int step = 0; step < 2000; ++step) {
    // Prompts over a tiny vocabulary share prefixes often.
    const int blocks = 1 + rng() % 6;
    std::vector<int32_t> tokens(blocks * l.block_tokens);
    for (auto& t : tokens) t = rng() % 3;
    const std::vector<BlockKey> keys = PrefixKeys(tokens, l.block_tokens);
    if (rng() % 4 == 0) {
      auto g = store->Get(l, keys);
      ASSERT_TRUE(g.ok());
    } else {
      auto hit = store->Lookup(l, keys);
      ASSERT_TRUE(hit.ok());
      std::vector<Block> missing;
      BlockKey parent = hit->num_hits ? keys[hit->num_hits - 1] : 0;
      for (int i = hit->num_hits; i < blocks; ++i) {
        Block b;
        b.parent = parent;
        b.tokens.assign(tokens.begin() + i * l.block_tokens,
                        tokens.begin() + (i + 1) * l.block_tokens);
        b.key = keys[i];
        for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
          const bool present = rng() % 5 != 0;
          b.layers.push_back(LayerPayload{
              layer, present, std::string(present ? rng() % 1500 : 0, 'x')});
          b.layers.back().Seal();
        }
        missing.push_back(std::move(b));
        parent = keys[i];
      }
      auto r = store->Put(l, std::move(missing));
      if (r.ok()) {
        stored += r->stored;
      } else {
        ASSERT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted)
            << r.status();
        ++refused;
      }
    }
    CheckInvariants(*store);
  }
  EXPECT_GT(stored, 500);
  EXPECT_GT(store->bytes_used(), capacity / 2);
}

}  // namespace
}  // namespace latentkv::kvstore
