// Blocks written in KV-head parts (tensor-parallel ranks each storing their
// heads): held until whole, then stored; read back by any head range.
// Expectations are cut by hand from a whole block built independently.
#include "kvstore/head_parts.h"

#include <thread>

#include "gtest/gtest.h"
#include "kvstore/block_store.h"
#include "kvstore/test_util.h"

namespace latentkv::kvstore {
namespace {

using testing::KeysOf;
using testing::MakeBlock;
using testing::MakeChain;

// 4 KV heads; payloads of 4 x 24 bytes per layer (layer 1 absent in some).
KvLayout FourHeads() {
  KvLayout l = testing::SmallLayout();
  l.num_kv_heads = 4;
  return l;
}
constexpr int kLayerBytes = 96;

// Heads [begin, end) of `whole` (4 heads), cut here by byte offsets.
Block Part(const Block& whole, uint32_t begin, uint32_t end) {
  Block p = whole;
  p.head_begin = begin;
  p.head_end = end;
  for (LayerPayload& l : p.layers) {
    if (!l.present) continue;
    const size_t seg = l.data.size() / 4;
    l.data =
        whole.layers[l.layer].data.substr(begin * seg, (end - begin) * seg);
    l.Seal();
  }
  return p;
}

std::unique_ptr<BlockStore> NewStore(BlockStore::Options o = {}) {
  o.layout = FourHeads();
  return *BlockStore::Create(o);
}

void ExpectPayloads(const Block& got, const Block& want) {
  ASSERT_EQ(got.key, want.key);
  ASSERT_EQ(got.tokens, want.tokens);
  for (const LayerPayload& w : want.layers) {
    if (!w.present) continue;
    bool found = false;
    for (const LayerPayload& g : got.layers) {
      if (g.layer != w.layer) continue;
      found = true;
      EXPECT_TRUE(g.present);
      EXPECT_EQ(g.data, w.data) << "layer " << w.layer;
      EXPECT_TRUE(g.Intact());
    }
    EXPECT_TRUE(found) << "layer " << w.layer;
  }
}

TEST(HeadPartsTest, BlockIsHiddenUntilEveryHeadArrives) {
  auto store = NewStore();
  const KvLayout layout = FourHeads();
  const Block whole = MakeBlock(layout, 0, 100, kLayerBytes);
  auto r = store->Put(layout, {Part(whole, 0, 2)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stored, 0);
  EXPECT_EQ(r->pending, 1);
  EXPECT_EQ(store->Lookup(layout, {whole.key})->num_hits, 0);
  EXPECT_TRUE(store->Get(layout, {whole.key})->empty());
  EXPECT_EQ(store->last_seq(), 0u);  // no STORED event for half a block
  EXPECT_EQ(store->stats().pending_blocks, 1);
  EXPECT_EQ(store->stats().pending_bytes, 3 * kLayerBytes / 2);

  r = store->Put(layout, {Part(whole, 2, 4)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stored, 1);
  EXPECT_EQ(r->pending, 0);
  EXPECT_EQ(store->last_seq(), 1u);
  EXPECT_EQ(store->stats().pending_blocks, 0);
  EXPECT_EQ(store->stats().pending_bytes, 0);
  EXPECT_EQ(store->bytes_used(), 3 * kLayerBytes);
  auto got = store->Get(layout, {whole.key});
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);
  ExpectPayloads(*(*got)[0], whole);
  // A third writer's heads of a stored block are a duplicate.
  r = store->Put(layout, {Part(whole, 1, 2)});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->duplicates, 1);
}

TEST(HeadPartsTest, AnyTpSizeWritesAndAnyTpSizeReads) {
  const KvLayout layout = FourHeads();
  const std::vector<Block> chain = MakeChain(layout, 3, 7, kLayerBytes);
  // Writers: a TP=4 group's ranks 0 and 1 and a TP=2 group's rank 1.
  auto store = NewStore();
  for (auto [b, e] : {std::pair{0u, 1u}, {1u, 2u}, {2u, 4u}}) {
    std::vector<Block> parts;
    for (const Block& w : chain) parts.push_back(Part(w, b, e));
    auto r = store->Put(layout, parts);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_EQ(store->Lookup(layout, KeysOf(chain))->num_hits, 3);
  // Readers: TP=1 (every head), TP=2's rank 0, TP=4's rank 3.
  for (auto [b, e] : {std::pair{0u, 0u}, {0u, 2u}, {3u, 4u}}) {
    auto got = store->Get(layout, KeysOf(chain), b, e);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), 3u);
    for (size_t i = 0; i < chain.size(); ++i) {
      const Block want = e == 0 ? chain[i] : Part(chain[i], b, e);
      ExpectPayloads(*(*got)[i], want);
      EXPECT_EQ((*got)[i]->head_begin, b);
      EXPECT_EQ((*got)[i]->head_end, e);
    }
  }
  // One whole write is sliced for a TP=4 reader the same way.
  auto whole_store = NewStore();
  ASSERT_TRUE(whole_store->Put(layout, chain).ok());
  auto got = whole_store->Get(layout, KeysOf(chain), 1, 2);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 3u);
  ExpectPayloads(*(*got)[2], Part(chain[2], 1, 2));
}

TEST(HeadPartsTest, ChildCompletedBeforeItsParentWaitsForIt) {
  auto store = NewStore();
  const KvLayout layout = FourHeads();
  const std::vector<Block> chain = MakeChain(layout, 2, 0, kLayerBytes);
  ASSERT_TRUE(
      store->Put(layout, {Part(chain[0], 0, 2), Part(chain[1], 0, 2)}).ok());
  // The child's other heads: whole, but its parent is not.
  auto r = store->Put(layout, {Part(chain[1], 2, 4)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stored, 0);
  EXPECT_EQ(store->Lookup(layout, KeysOf(chain))->num_hits, 0);
  r = store->Put(layout, {Part(chain[0], 2, 4)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stored, 2);  // the parent, then the child it was holding
  EXPECT_EQ(store->Lookup(layout, KeysOf(chain))->num_hits, 2);
  const StoreSnapshot snap = store->Snapshot();
  ASSERT_EQ(snap.blocks.size(), 2u);
  EXPECT_EQ(snap.blocks[0].key, chain[0].key);  // parents before children
}

TEST(HeadPartsTest, DisagreeingHeadsAreRefusedAndNothingChanges) {
  auto store = NewStore();
  const KvLayout layout = FourHeads();
  const Block whole = MakeBlock(layout, 0, 0, kLayerBytes);
  ASSERT_TRUE(store->Put(layout, {Part(whole, 0, 2)}).ok());
  // Other bytes per head (a writer of another shape).
  const Block wider = MakeBlock(layout, 0, 0, 2 * kLayerBytes);
  auto r = store->Put(layout, {Part(wider, 2, 4)});
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  // A layer absent here, present there.
  const Block dropped = MakeBlock(layout, 0, 0, kLayerBytes, true);
  r = store->Put(layout, {Part(dropped, 2, 4)});
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_EQ(store->stats().pending_bytes, 3 * kLayerBytes / 2);
  // The right heads still complete it, unmixed.
  r = store->Put(layout, {Part(whole, 2, 4)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stored, 1);
  ExpectPayloads(*(*store->Get(layout, {whole.key}))[0], whole);
}

TEST(HeadPartsTest, MalformedRangesAreInvalid) {
  auto store = NewStore();
  const KvLayout layout = FourHeads();
  const Block whole = MakeBlock(layout, 0, 0, kLayerBytes);
  Block bad = Part(whole, 1, 3);
  bad.head_begin = 3;  // [3, 3)
  EXPECT_TRUE(absl::IsInvalidArgument(store->Put(layout, {bad}).status()));
  bad = Part(whole, 2, 4);
  bad.head_end = 5;  // beyond num_kv_heads
  EXPECT_TRUE(absl::IsInvalidArgument(store->Put(layout, {bad}).status()));
  bad = Part(whole, 0, 2);  // layer 0: 5 bytes do not split into 2 heads
  bad.layers[0].data.resize(5);
  bad.layers[0].Seal();
  EXPECT_TRUE(absl::IsInvalidArgument(store->Put(layout, {bad}).status()));
  // Two head ranges in one request.
  const std::vector<Block> chain = MakeChain(layout, 2, 0, kLayerBytes);
  auto r = store->Put(layout, {Part(chain[0], 0, 2), Part(chain[1], 2, 4)});
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_EQ(store->stats().pending_blocks, 0);
  EXPECT_TRUE(
      absl::IsInvalidArgument(store->Get(layout, {whole.key}, 2, 1).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(store->Get(layout, {whole.key}, 0, 5).status()));
}

TEST(HeadPartsTest, IncompleteBlocksTimeOutAndAreBounded) {
  const KvLayout layout = FourHeads();
  BlockStore::Options o;
  o.pending_timeout = absl::Milliseconds(20);
  auto store = NewStore(o);
  const Block a = MakeBlock(layout, 0, 0, kLayerBytes);
  ASSERT_TRUE(store->Put(layout, {Part(a, 0, 2)}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  // The dead writer's half is gone: the other half alone is not a block.
  auto r = store->Put(layout, {Part(a, 2, 4)});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stored, 0);
  EXPECT_EQ(r->pending, 1);
  EXPECT_EQ(store->stats().dropped_pending_blocks, 1);
  EXPECT_EQ(store->Lookup(layout, {a.key})->num_hits, 0);

  // Bounded bytes: a new block's heads push out the oldest incomplete one.
  BlockStore::Options small;
  small.max_pending_bytes = 3 * kLayerBytes / 2 + 10;  // one half block
  auto bounded = NewStore(small);
  const Block b = MakeBlock(layout, 0, 50, kLayerBytes);
  ASSERT_TRUE(bounded->Put(layout, {Part(a, 0, 2)}).ok());
  ASSERT_TRUE(bounded->Put(layout, {Part(b, 0, 2)}).ok());
  EXPECT_EQ(bounded->stats().dropped_pending_blocks, 1);
  EXPECT_EQ(bounded->stats().pending_blocks, 1);
  r = bounded->Put(layout, {Part(b, 2, 4)});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stored, 1);
  // A part larger than the bound is refused outright.
  BlockStore::Options tiny;
  tiny.max_pending_bytes = 10;
  auto none = NewStore(tiny);
  EXPECT_TRUE(
      absl::IsResourceExhausted(none->Put(layout, {Part(a, 0, 2)}).status()));
}

TEST(HeadPartsTest, AWholeWriteReplacesHeldHeads) {
  auto store = NewStore();
  const KvLayout layout = FourHeads();
  const Block whole = MakeBlock(layout, 0, 0, kLayerBytes);
  ASSERT_TRUE(store->Put(layout, {Part(whole, 0, 1)}).ok());
  auto r = store->Put(layout, {whole});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stored, 1);
  EXPECT_EQ(store->stats().pending_blocks, 0);
  EXPECT_EQ(store->stats().pending_bytes, 0);
  EXPECT_EQ(store->bytes_used(), 3 * kLayerBytes);
}

}  // namespace
}  // namespace latentkv::kvstore
