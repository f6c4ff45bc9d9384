#include "worker/cache/prefix_index.h"

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/chain_key.h"

namespace latentkv::worker {
namespace {

using ::testing::ElementsAreArray;
using ::testing::UnorderedElementsAreArray;

constexpr int32_t kPage = 4;

std::unique_ptr<KvCache> MakeCache(int64_t pages_per_head = 16) {
  std::vector<LayerKvShape> shapes = {{2, 4, 4}, {1, 2, 6}};
  int64_t per_token = 0;
  for (const auto& s : shapes) {
    per_token += s.n_kv_heads * (s.d_qk + s.d_vo + 1) * 4;
  }
  KvCacheOptions o;
  o.page_size = kPage;
  o.max_bytes = per_token * kPage * pages_per_head;
  return *KvCache::Create(shapes, o);
}

// Appends `n` tokens at positions [start, start + n) to every (layer, head),
// as the model runner does.
void Fill(KvCache& cache, SequenceKv& kv, int64_t start, int64_t n) {
  ASSERT_TRUE(kv.Reserve(cache, n).ok());
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    const int32_t heads = cache.shape(l).n_kv_heads;
    std::vector<int64_t> slots(n * heads);
    kv.Append(cache, l, n, slots.data(), start);
  }
}

std::vector<int32_t> Tokens(int n, int32_t first) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

int64_t FreePages(const KvCache& cache) {
  int64_t n = 0;
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    n += cache.allocator(l).num_free();
  }
  return n;
}

TEST(PrefixIndexTest, MatchesWholeCachedBlocksOnly) {
  auto cache = MakeCache();
  PrefixIndex index(cache.get());
  const std::vector<int32_t> toks = Tokens(10, 100);  // 2 full blocks + 2
  SequenceKv kv;
  kv.Init(*cache);
  Fill(*cache, kv, 0, 10);
  EXPECT_EQ(index.Insert(kv, toks, 10), 2);
  EXPECT_EQ(index.num_blocks(), 2);
  EXPECT_EQ(index.num_pages(), 2 * 3);  // 3 (layer, head) lists per block
  EXPECT_EQ(index.Match(toks, 100), 8);
  EXPECT_EQ(index.Match(toks, 7), 4);  // capped, whole blocks
  std::vector<int32_t> diverge = toks;
  diverge[5] = 7;  // inside the second block
  EXPECT_EQ(index.Match(diverge, 100), 4);
  diverge[0] = 7;
  EXPECT_EQ(index.Match(diverge, 100), 0);
  // Keys are the store's chain keys of the same tokens.
  EXPECT_THAT(index.Keys(),
              UnorderedElementsAreArray(kvstore::PrefixKeys(
                  absl::MakeConstSpan(toks).subspan(0, 8), kPage)));
  kv.Release(*cache);
}

TEST(PrefixIndexTest, AttachSharesPagesThatOutliveTheirFirstOwner) {
  auto cache = MakeCache();
  const int64_t all_free = FreePages(*cache);
  auto index = std::make_unique<PrefixIndex>(cache.get());
  const std::vector<int32_t> toks = Tokens(8, 5);
  SequenceKv a;
  a.Init(*cache);
  Fill(*cache, a, 0, 8);
  ASSERT_EQ(index->Insert(a, toks, 8), 2);
  std::vector<int32_t> a_pages;
  for (int32_t l = 0; l < 2; ++l) {
    for (int32_t h = 0; h < cache->shape(l).n_kv_heads; ++h) {
      a_pages.push_back(a.page_at(l, h, 1));
    }
  }
  a.Release(*cache);  // the index keeps the pages
  EXPECT_EQ(FreePages(*cache), all_free - 6);

  SequenceKv b;
  b.Init(*cache);
  ASSERT_TRUE(index->Attach(b, toks, 8).ok());
  EXPECT_EQ(b.num_tokens(0, 1), 8);
  EXPECT_EQ(b.num_tokens(1, 0), 8);
  std::vector<int32_t> b_pages;
  for (int32_t l = 0; l < 2; ++l) {
    for (int32_t h = 0; h < cache->shape(l).n_kv_heads; ++h) {
      b_pages.push_back(b.page_at(l, h, 1));
      EXPECT_EQ(cache->allocator(l).refcount(b.page_at(l, h, 0)), 2);
    }
  }
  EXPECT_THAT(b_pages, ElementsAreArray(a_pages));
  // A shared block cannot be evicted; the appends go to fresh pages.
  EXPECT_EQ(index->Evict(10), 0);
  Fill(*cache, b, 8, 3);
  EXPECT_EQ(b.SlotOf(*cache, 0, 0, 8) / kPage, b.page_at(0, 0, 2));
  b.Release(*cache);
  EXPECT_EQ(index->Evict(10), 2);
  EXPECT_EQ(FreePages(*cache), all_free);
  index.reset();
  EXPECT_EQ(FreePages(*cache), all_free);
}

TEST(PrefixIndexTest, RefusesSequencesThatAreNotAFullCache) {
  auto cache = MakeCache();
  PrefixIndex index(cache.get());
  const std::vector<int32_t> toks = Tokens(8, 1);
  SequenceKv kv;
  kv.Init(*cache);
  Fill(*cache, kv, 0, 8);
  // Drop slot 1 of one head (as an eviction policy would): positions shift.
  KvMoves moves;
  ASSERT_TRUE(kv.Retain(*cache, 1, 0, {0, 2, 3, 4, 5, 6, 7}, &moves).ok());
  EXPECT_EQ(moves.src.size(), 6u);  // slots 2..7 move forward by one
  EXPECT_EQ(index.Insert(kv, toks, 8), 0);
  EXPECT_EQ(index.num_blocks(), 0);
  kv.Release(*cache);

  SequenceKv shifted;  // right count, wrong positions (a prefix at offset 4)
  shifted.Init(*cache);
  Fill(*cache, shifted, 4, 8);
  EXPECT_EQ(index.Insert(shifted, toks, 8), 0);
  shifted.Release(*cache);
}

TEST(PrefixIndexTest, EvictsLeastRecentlyUsedLeavesAndReportsEvents) {
  auto cache = MakeCache();
  const int64_t all_free = FreePages(*cache);
  PrefixIndex index(cache.get());
  const std::vector<int32_t> x = Tokens(8, 10), y = Tokens(4, 50);
  for (const auto* toks : {&x, &y}) {
    SequenceKv kv;
    kv.Init(*cache);
    Fill(*cache, kv, 0, static_cast<int64_t>(toks->size()));
    index.Insert(kv, *toks, static_cast<int64_t>(toks->size()));
    kv.Release(*cache);
  }
  const auto kx = kvstore::PrefixKeys(x, kPage);
  const auto ky = kvstore::PrefixKeys(y, kPage);
  EXPECT_EQ(index.log().Updates(0, false).last_seq, 0u);  // not published
  index.Publish();
  PrefixCacheUpdate u = index.log().Updates(0, false);
  ASSERT_FALSE(u.snapshot);
  ASSERT_EQ(u.events.size(), 1u);  // consecutive stores merge
  EXPECT_EQ(u.first_seq, 1u);
  EXPECT_TRUE(u.events[0].stored);
  EXPECT_THAT(u.events[0].keys, ElementsAreArray({kx[0], kx[1], ky[0]}));
  EXPECT_EQ(index.log().HeldTokens(kx), 8);
  index.Publish();
  EXPECT_TRUE(index.log().Updates(1, false).events.empty());

  // Use x again: y is now the least recently used leaf and goes first; then
  // x's second block (a leaf), then its first (a leaf once its child went).
  SequenceKv user;
  user.Init(*cache);
  ASSERT_EQ(index.Match(x, 8), 8);
  ASSERT_TRUE(index.Attach(user, x, 8).ok());
  user.Release(*cache);
  EXPECT_EQ(index.Evict(1), 1);
  EXPECT_EQ(index.Match(y, 4), 0);
  EXPECT_EQ(index.Match(x, 8), 8);
  EXPECT_EQ(index.Evict(5), 2);
  EXPECT_EQ(index.num_blocks(), 0);
  EXPECT_EQ(FreePages(*cache), all_free);
  index.Publish();
  u = index.log().Updates(1, false);
  ASSERT_EQ(u.events.size(), 1u);
  EXPECT_EQ(u.first_seq, 2u);
  EXPECT_FALSE(u.events[0].stored);
  EXPECT_THAT(u.events[0].keys, ElementsAreArray({ky[0], kx[1], kx[0]}));
  EXPECT_EQ(index.log().HeldTokens(kx), 0);
  // A reader ahead of the log, or asking for one, gets a snapshot: no keys.
  u = index.log().Updates(7, false);
  EXPECT_TRUE(u.snapshot);
  EXPECT_TRUE(u.events[0].keys.empty());
}

TEST(PrefixEventLogTest, BoundedLogSendsLaggingReadersASnapshot) {
  PrefixEventLog log(4, 2);
  log.Append({{true, {1, 2}}, {true, {3}}, {false, {1}}});
  PrefixCacheUpdate u = log.Updates(1, false);  // events 2, 3 are kept
  ASSERT_FALSE(u.snapshot);
  EXPECT_EQ(u.first_seq, 2u);
  EXPECT_EQ(u.events.size(), 2u);
  u = log.Updates(0, false);  // event 1 is gone: snapshot
  ASSERT_TRUE(u.snapshot);
  EXPECT_EQ(u.last_seq, 3u);
  EXPECT_THAT(u.events[0].keys, ::testing::UnorderedElementsAre(2, 3));
  EXPECT_EQ(log.HeldTokens({2, 3, 1}), 8);
}

}  // namespace
}  // namespace latentkv::worker
