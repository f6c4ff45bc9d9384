#include "worker/cache/kv_cache.h"

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// BlockAllocator

TEST(BlockAllocatorTest, HandsOutLowestIdsFirst) {
  BlockAllocator a(4);
  EXPECT_EQ(a.num_pages(), 4);
  EXPECT_EQ(a.num_free(), 4);
  EXPECT_EQ(a.Allocate(), 0);
  EXPECT_EQ(a.Allocate(), 1);
  EXPECT_EQ(a.Allocate(), 2);
  a.Unref(1);
  a.Unref(0);
  EXPECT_EQ(a.Allocate(), 0);
  EXPECT_EQ(a.Allocate(), 1);
  EXPECT_EQ(a.Allocate(), 3);
  EXPECT_EQ(a.Allocate(), std::nullopt);
  EXPECT_EQ(a.num_free(), 0);
}

TEST(BlockAllocatorTest, RefKeepsPageLiveUntilLastUnref) {
  BlockAllocator a(2);
  const int32_t p = *a.Allocate();
  a.Ref(p);
  EXPECT_EQ(a.refcount(p), 2);
  a.Unref(p);
  EXPECT_EQ(a.refcount(p), 1);
  EXPECT_EQ(a.num_free(), 1);
  a.Unref(p);
  EXPECT_EQ(a.refcount(p), 0);
  EXPECT_EQ(a.num_free(), 2);
}

TEST(BlockAllocatorTest, ZeroPages) {
  BlockAllocator a(0);
  EXPECT_EQ(a.Allocate(), std::nullopt);
}

TEST(BlockAllocatorDeathTest, RefOrUnrefOfFreePageAborts) {
  BlockAllocator a(3);
  EXPECT_DEATH(a.Ref(1), "Ref of free page 1");
  EXPECT_DEATH(a.Unref(2), "Unref of free page 2");
  EXPECT_DEATH(a.Unref(7), "out of range");
  const int32_t p = *a.Allocate();
  a.Unref(p);
  EXPECT_DEATH(a.Unref(p), "Unref of free page");
}

// Random Allocate/Ref/Unref checked against a map of refcounts.
TEST(BlockAllocatorTest, RandomOpsMatchModel) {
  for (uint64_t seed : {1u, 2u, 3u, 42u, 1234u}) {
    SCOPED_TRACE(seed);
    constexpr int32_t kPages = 37;
    BlockAllocator a(kPages);
    std::map<int32_t, int32_t> live;  // page -> refcount
    std::mt19937_64 rng(seed);
    for (int step = 0; step < 20000; ++step) {
      const int op = std::uniform_int_distribution<int>(0, 2)(rng);
      if (op == 0 || live.empty()) {
        std::optional<int32_t> p = a.Allocate();
        if (static_cast<int32_t>(live.size()) == kPages) {
          ASSERT_EQ(p, std::nullopt);
        } else {
          ASSERT_TRUE(p.has_value());
          // The lowest free id.
          int32_t expected = 0;
          while (live.count(expected)) ++expected;
          ASSERT_EQ(*p, expected);
          live[*p] = 1;
        }
      } else {
        auto it = live.begin();
        std::advance(
            it, std::uniform_int_distribution<size_t>(0, live.size() - 1)(rng));
        if (op == 1) {
          a.Ref(it->first);
          ++it->second;
        } else {
          a.Unref(it->first);
          if (--it->second == 0) live.erase(it);
        }
      }
      ASSERT_EQ(a.num_free(), kPages - static_cast<int32_t>(live.size()));
      if (step % 97 == 0) {
        for (int32_t p = 0; p < kPages; ++p) {
          auto found = live.find(p);
          ASSERT_EQ(a.refcount(p), found == live.end() ? 0 : found->second);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// KvCache::Create

std::vector<LayerKvShape> MixedLayers() {
  return {{.n_kv_heads = 4, .d_qk = 8, .d_vo = 8},
          {.n_kv_heads = 2, .d_qk = 12, .d_vo = 20}};
}

// page_size 4: layer 0 page = 4 * (8*4 + 8*4 + 4) = 272 B, x4 heads = 1088;
// layer 1 page = 4 * (12*4 + 20*4 + 4) = 528 B, x2 heads = 1056; round 2144.
struct BudgetCase {
  int64_t max_bytes;
  int64_t pages_per_head;  // 0: InvalidArgument
};

class KvCacheBudgetTest : public ::testing::TestWithParam<BudgetCase> {};

TEST_P(KvCacheBudgetTest, PagesFollowBudgetRule) {
  const BudgetCase& c = GetParam();
  auto cache = KvCache::Create(MixedLayers(),
                               {.page_size = 4, .max_bytes = c.max_bytes});
  if (c.pages_per_head == 0) {
    EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(cache.status().message(), HasSubstr("2144"));
    return;
  }
  ASSERT_TRUE(cache.ok()) << cache.status();
  KvCache& kv = **cache;
  EXPECT_EQ(kv.num_layers(), 2);
  EXPECT_EQ(kv.page_size(), 4);
  EXPECT_EQ(kv.page_bytes(0), 272);
  EXPECT_EQ(kv.page_bytes(1), 528);
  EXPECT_EQ(kv.allocator(0).num_pages(), c.pages_per_head * 4);
  EXPECT_EQ(kv.allocator(1).num_pages(), c.pages_per_head * 2);
  EXPECT_EQ(kv.capacity_bytes(), c.pages_per_head * 2144);
  EXPECT_LE(kv.capacity_bytes(), c.max_bytes);
  EXPECT_EQ(kv.pages_in_use(), 0);
  EXPECT_EQ(kv.bytes_in_use(), 0);
}

TEST(KvCacheTest, PageBytesFollowTheKvDtype) {
  // Layer 0: 4 slots x ((8 + 8) elements + a 4-byte position).
  for (const auto& [dtype, bytes] :
       std::vector<std::pair<DType, int64_t>>{{DType::kF32, 4 * (16 * 4 + 4)},
                                              {DType::kBF16, 4 * (16 * 2 + 4)},
                                              {DType::kF16, 4 * (16 * 2 + 4)},
                                              {DType::kF8E4M3, 4 * (16 + 4)}}) {
    auto cache = KvCache::Create(
        MixedLayers(), {.page_size = 4, .max_bytes = 1 << 20, .dtype = dtype});
    ASSERT_TRUE(cache.ok()) << cache.status();
    EXPECT_EQ((*cache)->page_bytes(0), bytes) << DTypeName(dtype);
    EXPECT_EQ((*cache)->token_data_bytes(0), 16 * DTypeSize(dtype));
    // The same bound holds more pages when they are smaller.
    EXPECT_EQ((*cache)->allocator(0).num_pages(),
              (int64_t{1} << 20) /
                  ((*cache)->page_bytes(0) * 4 + (*cache)->page_bytes(1) * 2) *
                  4);
  }
  auto q =
      KvCache::Create(MixedLayers(), {.page_size = 4, .dtype = DType::kQ8_0});
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Budgets, KvCacheBudgetTest,
                         ::testing::Values(BudgetCase{2143, 0},
                                           BudgetCase{2144, 1},
                                           BudgetCase{2144 * 2 - 1, 1},
                                           BudgetCase{2144 * 7, 7},
                                           BudgetCase{2144 * 100 + 5, 100}));

TEST(KvCacheTest, RejectsInvalidShapesAndOptions) {
  struct Case {
    std::vector<LayerKvShape> layers;
    KvCacheOptions options;
  };
  const std::vector<Case> cases = {
      {{}, {}},
      {{{.n_kv_heads = 0, .d_qk = 8, .d_vo = 8}}, {}},
      {{{.n_kv_heads = 2, .d_qk = 0, .d_vo = 8}}, {}},
      {{{.n_kv_heads = 2, .d_qk = 8, .d_vo = -1}}, {}},
      {MixedLayers(), {.page_size = 0}},
      {MixedLayers(), {.page_size = 16, .max_bytes = 0}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    auto cache = KvCache::Create(cases[i].layers, cases[i].options);
    EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// ---------------------------------------------------------------------------
// SequenceKv

std::unique_ptr<KvCache> MakeCache(int64_t pages_per_head, int32_t page_size) {
  // Round bytes for MixedLayers: page_size * (4*68 + 2*132) = page_size * 536.
  auto cache = KvCache::Create(
      MixedLayers(),
      {.page_size = page_size, .max_bytes = pages_per_head * page_size * 536});
  EXPECT_TRUE(cache.ok()) << cache.status();
  return *std::move(cache);
}

std::vector<int32_t> FreeCounts(const KvCache& kv) {
  std::vector<int32_t> out;
  for (int32_t l = 0; l < kv.num_layers(); ++l) {
    out.push_back(kv.allocator(l).num_free());
  }
  return out;
}

void ExpectUsageMatchesAllocators(const KvCache& kv) {
  int64_t pages = 0, bytes = 0;
  for (int32_t l = 0; l < kv.num_layers(); ++l) {
    const int64_t used =
        kv.allocator(l).num_pages() - kv.allocator(l).num_free();
    pages += used;
    bytes += used * kv.page_bytes(l);
  }
  EXPECT_EQ(kv.pages_in_use(), pages);
  EXPECT_EQ(kv.bytes_in_use(), bytes);
}

TEST(SequenceKvTest, ReserveAllocatesPerLayerAndHead) {
  auto kv = MakeCache(10, 4);
  SequenceKv seq;
  seq.Init(*kv);
  // 6 tokens -> 2 pages per head; 4 + 2 heads.
  EXPECT_EQ(seq.PagesNeeded(*kv, 6), 12);
  ASSERT_TRUE(seq.Reserve(*kv, 6).ok());
  EXPECT_EQ(seq.num_pages(), 12);
  EXPECT_EQ(kv->allocator(0).num_free(), 40 - 8);
  EXPECT_EQ(kv->allocator(1).num_free(), 20 - 4);
  EXPECT_EQ(kv->pages_in_use(), 12);
  EXPECT_EQ(kv->bytes_in_use(), 8 * kv->page_bytes(0) + 4 * kv->page_bytes(1));
  ExpectUsageMatchesAllocators(*kv);
  // Reserving again without appending is covered by the existing pages.
  EXPECT_EQ(seq.PagesNeeded(*kv, 6), 0);
  EXPECT_EQ(seq.PagesNeeded(*kv, 8), 0);
  EXPECT_EQ(seq.PagesNeeded(*kv, 9), 6);
  seq.Release(*kv);
}

TEST(SequenceKvTest, FailedReserveAllocatesNothing) {
  auto kv = MakeCache(3, 4);  // 12 pages in layer 0, 6 in layer 1
  SequenceKv a, b;
  a.Init(*kv);
  b.Init(*kv);
  ASSERT_TRUE(a.Reserve(*kv, 8).ok());  // 2 pages per head
  const std::vector<int32_t> before = FreeCounts(*kv);
  EXPECT_EQ(before, (std::vector<int32_t>{4, 2}));
  // b needs 2 pages per head: 8 in layer 0 (4 free), 4 in layer 1 (2 free).
  absl::Status s = b.Reserve(*kv, 5);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("layer 0 needs 8 pages, 4 free"));
  EXPECT_THAT(s.message(), HasSubstr("layer 1 needs 4 pages, 2 free"));
  EXPECT_EQ(FreeCounts(*kv), before);
  EXPECT_EQ(b.num_pages(), 0);
  // One page per head fits exactly.
  ASSERT_TRUE(b.Reserve(*kv, 4).ok());
  EXPECT_EQ(FreeCounts(*kv), (std::vector<int32_t>{0, 0}));
  a.Release(*kv);
  b.Release(*kv);
  EXPECT_EQ(FreeCounts(*kv), (std::vector<int32_t>{12, 6}));
}

TEST(SequenceKvTest, ShortInOneLayerOnlyAllocatesNothing) {
  // Sequences use every layer alike, so drain layer 1 through its allocator
  // to make it the only short layer.
  auto kv = MakeCache(4, 4);
  std::vector<int32_t> taken;
  while (kv->allocator(1).num_free() > 1)
    taken.push_back(*kv->allocator(1).Allocate());
  const std::vector<int32_t> before = FreeCounts(*kv);
  SequenceKv seq;
  seq.Init(*kv);
  absl::Status s = seq.Reserve(*kv, 1);  // needs 4 in layer 0, 2 in layer 1
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("layer 1 needs 2 pages, 1 free"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("layer 0")));
  EXPECT_EQ(FreeCounts(*kv), before);
  for (int32_t p : taken) kv->allocator(1).Unref(p);
}

struct AppendCase {
  int32_t page_size;
  std::vector<int64_t> chunks;  // Reserve+Append sizes in order
};

class SequenceKvAppendTest : public ::testing::TestWithParam<AppendCase> {};

TEST_P(SequenceKvAppendTest, SlotsAndDescriptionAreConsistent) {
  const AppendCase& c = GetParam();
  auto kv = MakeCache(64, c.page_size);
  const std::vector<int32_t> initial = FreeCounts(*kv);
  // Two interleaved sequences so pages are not simply contiguous.
  SequenceKv seqs[2];
  for (SequenceKv& s : seqs) s.Init(*kv);
  // slots_seen[layer]: every slot handed out in that layer.
  std::vector<std::set<int64_t>> slots_seen(kv->num_layers());
  // Per (seq, layer, head): the slot of every token, in order.
  std::vector<std::vector<std::vector<int64_t>>> token_slots[2];
  for (auto& t : token_slots) {
    t.resize(kv->num_layers());
    for (int32_t l = 0; l < kv->num_layers(); ++l) {
      t[l].resize(kv->shape(l).n_kv_heads);
    }
  }
  int64_t total = 0;
  for (int64_t n : c.chunks) {
    for (int si = 0; si < 2; ++si) {
      ASSERT_TRUE(seqs[si].Reserve(*kv, n).ok());
      for (int32_t l = 0; l < kv->num_layers(); ++l) {
        const int32_t n_kv = kv->shape(l).n_kv_heads;
        std::vector<int64_t> slots(n * n_kv, -1);
        seqs[si].Append(*kv, l, n, slots.data());
        const int64_t n_slots =
            int64_t{kv->allocator(l).num_pages()} * c.page_size;
        for (int64_t t = 0; t < n; ++t) {
          for (int32_t h = 0; h < n_kv; ++h) {
            const int64_t slot = slots[t * n_kv + h];
            ASSERT_GE(slot, 0);
            ASSERT_LT(slot, n_slots);
            ASSERT_TRUE(slots_seen[l].insert(slot).second)
                << "duplicate slot " << slot;
            token_slots[si][l][h].push_back(slot);
          }
        }
      }
    }
    total += n;
  }
  for (int si = 0; si < 2; ++si) {
    for (int32_t l = 0; l < kv->num_layers(); ++l) {
      std::vector<int32_t> indptr = {0}, indices, last_len;
      seqs[si].Describe(*kv, l, &indptr, &indices, &last_len);
      const int32_t n_kv = kv->shape(l).n_kv_heads;
      ASSERT_EQ(static_cast<int32_t>(indptr.size()), n_kv + 1);
      ASSERT_EQ(static_cast<int32_t>(last_len.size()), n_kv);
      EXPECT_EQ(indptr.back(), static_cast<int32_t>(indices.size()));
      for (int32_t h = 0; h < n_kv; ++h) {
        EXPECT_EQ(seqs[si].num_tokens(l, h), total);
        const int32_t pages = indptr[h + 1] - indptr[h];
        ASSERT_GE(pages, 0);
        if (total == 0) {
          EXPECT_EQ(pages, 0);
          EXPECT_EQ(last_len[h], 0);
          continue;
        }
        EXPECT_GE(last_len[h], 1);
        EXPECT_LE(last_len[h], c.page_size);
        EXPECT_EQ(int64_t{pages - 1} * c.page_size + last_len[h], total);
        // Token t lives at page indices[indptr[h] + t / ps], offset t % ps:
        // sequential within a page, crossing to the next listed page.
        const std::vector<int64_t>& ts = token_slots[si][l][h];
        ASSERT_EQ(static_cast<int64_t>(ts.size()), total);
        for (int64_t t = 0; t < total; ++t) {
          const int64_t page = indices[indptr[h] + t / c.page_size];
          EXPECT_EQ(ts[t], page * c.page_size + t % c.page_size) << t;
        }
      }
    }
  }
  ExpectUsageMatchesAllocators(*kv);
  for (SequenceKv& s : seqs) s.Release(*kv);
  EXPECT_EQ(FreeCounts(*kv), initial);
  EXPECT_EQ(kv->pages_in_use(), 0);
  EXPECT_EQ(kv->bytes_in_use(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Chunks, SequenceKvAppendTest,
    ::testing::Values(AppendCase{4, {}}, AppendCase{4, {1}}, AppendCase{4, {4}},
                      AppendCase{4, {5}}, AppendCase{4, {3, 1, 1, 7}},
                      AppendCase{16, {17, 1, 1, 1, 15, 16, 2}},
                      AppendCase{1, {3, 2}}, AppendCase{8, {0, 8, 0, 9}}));

TEST(SequenceKvTest, DescribeAppendsAfterExistingEntries) {
  auto kv = MakeCache(8, 4);
  SequenceKv a, b;
  a.Init(*kv);
  b.Init(*kv);
  std::vector<int64_t> slots(16 * 4);
  ASSERT_TRUE(a.Reserve(*kv, 5).ok());
  a.Append(*kv, 0, 5, slots.data());
  ASSERT_TRUE(b.Reserve(*kv, 3).ok());
  b.Append(*kv, 0, 3, slots.data());
  std::vector<int32_t> indptr = {0}, indices, last;
  a.Describe(*kv, 0, &indptr, &indices, &last);
  b.Describe(*kv, 0, &indptr, &indices, &last);
  EXPECT_EQ(indptr, (std::vector<int32_t>{0, 2, 4, 6, 8, 9, 10, 11, 12}));
  EXPECT_EQ(last, (std::vector<int32_t>{1, 1, 1, 1, 3, 3, 3, 3}));
  // Lowest ids first: a took pages 0..7 (head by head), b 8..11.
  EXPECT_EQ(indices,
            (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  // Reserved but unappended pages are not described.
  ASSERT_TRUE(b.Reserve(*kv, 2).ok());  // crosses into a second page
  indptr = {0};
  indices.clear();
  last.clear();
  b.Describe(*kv, 0, &indptr, &indices, &last);
  EXPECT_EQ(indptr, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  a.Release(*kv);
  b.Release(*kv);
}

TEST(SequenceKvDeathTest, AppendBeyondReservationAborts) {
  auto kv = MakeCache(8, 4);
  SequenceKv seq;
  seq.Init(*kv);
  ASSERT_TRUE(seq.Reserve(*kv, 3).ok());
  std::vector<int64_t> slots(5 * 4);
  EXPECT_DEATH(seq.Append(*kv, 0, 5, slots.data()), "Reserve\\(\\) first");
  seq.Release(*kv);
}

TEST(SequenceKvTest, SharedPagesFreedAfterBothRelease) {
  auto kv = MakeCache(16, 4);
  const std::vector<int32_t> initial = FreeCounts(*kv);
  SequenceKv a, b;
  a.Init(*kv);
  b.Init(*kv);
  ASSERT_TRUE(a.Reserve(*kv, 10).ok());  // 3 pages per head
  for (int32_t l = 0; l < kv->num_layers(); ++l) {
    std::vector<int64_t> slots(10 * kv->shape(l).n_kv_heads);
    a.Append(*kv, l, 10, slots.data());
  }
  EXPECT_EQ(kv->pages_in_use(), 18);
  // Share the two full pages of each head.
  ASSERT_TRUE(b.SharePrefix(*kv, a, 8).ok());
  EXPECT_EQ(b.num_pages(), 12);
  EXPECT_EQ(b.num_tokens(1, 1), 8);
  EXPECT_EQ(kv->pages_in_use(), 18);  // shared, not copied
  std::vector<int32_t> ia_ptr = {0}, ia, la, ib_ptr = {0}, ib, lb;
  a.Describe(*kv, 0, &ia_ptr, &ia, &la);
  b.Describe(*kv, 0, &ib_ptr, &ib, &lb);
  for (int32_t h = 0; h < 4; ++h) {
    EXPECT_EQ(ib[ib_ptr[h]], ia[ia_ptr[h]]);
    EXPECT_EQ(ib[ib_ptr[h] + 1], ia[ia_ptr[h] + 1]);
    EXPECT_EQ(kv->allocator(0).refcount(ia[ia_ptr[h]]), 2);
    EXPECT_EQ(kv->allocator(0).refcount(ia[ia_ptr[h] + 2]), 1);
    EXPECT_EQ(lb[h], 4);
  }
  // b grows into its own page.
  ASSERT_TRUE(b.Reserve(*kv, 1).ok());
  EXPECT_EQ(kv->pages_in_use(), 24);
  ExpectUsageMatchesAllocators(*kv);
  a.Release(*kv);
  // a's private pages are back; shared ones stay with b.
  EXPECT_EQ(kv->pages_in_use(), 18);
  for (int32_t h = 0; h < 4; ++h) {
    EXPECT_EQ(kv->allocator(0).refcount(ia[ia_ptr[h]]), 1);
  }
  ExpectUsageMatchesAllocators(*kv);
  b.Release(*kv);
  EXPECT_EQ(kv->pages_in_use(), 0);
  EXPECT_EQ(FreeCounts(*kv), initial);
}

TEST(SequenceKvTest, SharePrefixRejectsBadArguments) {
  auto kv = MakeCache(16, 4);
  SequenceKv a, b;
  a.Init(*kv);
  b.Init(*kv);
  ASSERT_TRUE(a.Reserve(*kv, 8).ok());
  for (int32_t l = 0; l < kv->num_layers(); ++l) {
    std::vector<int64_t> slots(6 * kv->shape(l).n_kv_heads);
    a.Append(*kv, l, 6, slots.data());
  }
  const std::vector<int32_t> before = FreeCounts(*kv);
  EXPECT_EQ(b.SharePrefix(*kv, a, 3).code(),
            absl::StatusCode::kInvalidArgument);  // not page aligned
  EXPECT_EQ(b.SharePrefix(*kv, a, 8).code(),
            absl::StatusCode::kInvalidArgument);  // more than a holds
  EXPECT_EQ(b.num_pages(), 0);
  ASSERT_TRUE(b.SharePrefix(*kv, a, 4).ok());
  EXPECT_EQ(b.SharePrefix(*kv, a, 4).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(FreeCounts(*kv), before);
  a.Release(*kv);
  b.Release(*kv);
  EXPECT_EQ(kv->pages_in_use(), 0);
}

// Random workload of several sequences: usage always agrees with what the
// sequences hold, and everything comes back at the end.
TEST(SequenceKvTest, RandomWorkloadReturnsEveryPage) {
  for (uint64_t seed : {7u, 8u, 9u}) {
    SCOPED_TRACE(seed);
    auto kv = MakeCache(12, 4);
    const std::vector<int32_t> initial = FreeCounts(*kv);
    std::mt19937_64 rng(seed);
    std::vector<SequenceKv> seqs(5);
    for (SequenceKv& s : seqs) s.Init(*kv);
    for (int step = 0; step < 2000; ++step) {
      SequenceKv& s = seqs[std::uniform_int_distribution<int>(0, 4)(rng)];
      if (std::uniform_int_distribution<int>(0, 9)(rng) == 0) {
        s.Release(*kv);
      } else {
        const int64_t n = std::uniform_int_distribution<int>(1, 9)(rng);
        const std::vector<int32_t> before = FreeCounts(*kv);
        const int64_t need = s.PagesNeeded(*kv, n);
        absl::Status st = s.Reserve(*kv, n);
        if (!st.ok()) {
          ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
          ASSERT_EQ(FreeCounts(*kv), before);
          continue;
        }
        const std::vector<int32_t> after = FreeCounts(*kv);
        ASSERT_EQ((before[0] - after[0]) + (before[1] - after[1]), need);
        for (int32_t l = 0; l < kv->num_layers(); ++l) {
          std::vector<int64_t> slots(n * kv->shape(l).n_kv_heads);
          s.Append(*kv, l, n, slots.data());
        }
      }
      int64_t held = 0;
      for (const SequenceKv& q : seqs) held += q.num_pages();
      ASSERT_EQ(kv->pages_in_use(), held);
      ExpectUsageMatchesAllocators(*kv);
    }
    for (SequenceKv& s : seqs) s.Release(*kv);
    EXPECT_EQ(FreeCounts(*kv), initial);
  }
}

// ---------------------------------------------------------------------------
// SequenceKv::Retain

// The data plane as the control-plane tests see it: one tag per flat slot
// of each layer (what the pools hold, without their bytes).
using TagPools = std::vector<std::vector<int32_t>>;  // [layer][flat slot]

TagPools MakeTagPools(const KvCache& cache) {
  TagPools t(cache.num_layers());
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    t[l].assign(int64_t{cache.allocator(l).num_pages()} * cache.page_size(),
                -1);
  }
  return t;
}

// Applies `moves` to layer `layer` with their documented meaning: every
// source read before any destination is written; destinations distinct.
void ApplyMoves(TagPools& t, int32_t layer, const KvMoves& moves) {
  ASSERT_EQ(moves.src.size(), moves.dst.size());
  std::vector<int32_t> read;
  for (int64_t s : moves.src) read.push_back(t[layer][s]);
  std::set<int64_t> dsts(moves.dst.begin(), moves.dst.end());
  ASSERT_EQ(dsts.size(), moves.dst.size()) << "destinations repeat";
  for (size_t i = 0; i < moves.dst.size(); ++i)
    t[layer][moves.dst[i]] = read[i];
}

void Stamp(TagPools& t, const KvCache& cache, SequenceKv& kv, int32_t layer,
           int32_t head, int64_t slot, int32_t tag) {
  t[layer][kv.SlotOf(cache, layer, head, slot)] = tag;
}

// Checks that (layer, head) holds exactly the tags `want`, in order.
void ExpectTags(const TagPools& t, const KvCache& cache, const SequenceKv& kv,
                int32_t layer, int32_t head, const std::vector<int32_t>& want) {
  ASSERT_EQ(kv.num_tokens(layer, head), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(t[layer][kv.SlotOf(cache, layer, head, i)], want[i])
        << "slot " << i;
  }
}

TEST(SequenceKvRetainTest, RandomRetainsMatchModelAndFreePages) {
  auto cache =
      KvCache::Create(MixedLayers(), {.page_size = 4, .max_bytes = 2144 * 40});
  ASSERT_TRUE(cache.ok());
  KvCache& c = **cache;
  std::mt19937_64 rng(7);
  TagPools tags = MakeTagPools(c);
  SequenceKv kv;
  kv.Init(c);
  // model[layer][head] = tags held, in order.
  std::vector<std::vector<std::vector<int32_t>>> model(2);
  for (int32_t l = 0; l < 2; ++l) model[l].resize(c.shape(l).n_kv_heads);
  int32_t next_tag = 100;
  for (int round = 0; round < 30; ++round) {
    // Append 1..9 tokens everywhere.
    const int64_t n = std::uniform_int_distribution<int>(1, 9)(rng);
    ASSERT_TRUE(kv.Reserve(c, n).ok());
    for (int32_t l = 0; l < 2; ++l) {
      std::vector<int64_t> slots(n * c.shape(l).n_kv_heads);
      kv.Append(c, l, n, slots.data());
      for (int32_t h = 0; h < c.shape(l).n_kv_heads; ++h) {
        for (int64_t t = 0; t < n; ++t) {
          const int64_t i = kv.num_tokens(l, h) - n + t;
          const int32_t tag = next_tag + static_cast<int32_t>(t) * 1000;
          Stamp(tags, c, kv, l, h, i, tag);
          model[l][h].push_back(tag);
        }
      }
    }
    ++next_tag;
    // Retain a random subset of one random (layer, head).
    const int32_t l = std::uniform_int_distribution<int>(0, 1)(rng);
    const int32_t h =
        std::uniform_int_distribution<int>(0, c.shape(l).n_kv_heads - 1)(rng);
    std::vector<int64_t> keep;
    std::vector<int32_t> kept;
    for (int64_t i = 0; i < kv.num_tokens(l, h); ++i) {
      if (std::bernoulli_distribution(0.6)(rng)) {
        keep.push_back(i);
        kept.push_back(model[l][h][i]);
      }
    }
    KvMoves moves;
    ASSERT_TRUE(kv.Retain(c, l, h, keep, &moves).ok());
    ApplyMoves(tags, l, moves);
    // Only rows that change place move.
    for (size_t i = 0; i < moves.src.size(); ++i) {
      EXPECT_NE(moves.src[i], moves.dst[i]);
    }
    const bool prefix =
        keep.empty() || keep.back() + 1 == static_cast<int64_t>(keep.size());
    if (!prefix) {
      EXPECT_FALSE(kv.positions_dense(l, h));
    }
    model[l][h] = kept;
    // Every (layer, head) still holds what the model says, and the pages in
    // use are exactly ceil(tokens / page_size) per (layer, head).
    int64_t pages = 0;
    for (int32_t ll = 0; ll < 2; ++ll) {
      for (int32_t hh = 0; hh < c.shape(ll).n_kv_heads; ++hh) {
        ExpectTags(tags, c, kv, ll, hh, model[ll][hh]);
        pages += (kv.num_tokens(ll, hh) + 3) / 4;
      }
    }
    ASSERT_EQ(kv.num_pages(), pages);
    ASSERT_EQ(c.pages_in_use(), pages);
  }
  kv.Release(c);
  EXPECT_EQ(c.pages_in_use(), 0);
}

TEST(SequenceKvRetainTest, SharedPagesAreCopiedNotWritten) {
  auto cache = KvCache::Create({{.n_kv_heads = 1, .d_qk = 2, .d_vo = 2}},
                               {.page_size = 2, .max_bytes = 1 << 20});
  ASSERT_TRUE(cache.ok());
  KvCache& c = **cache;
  TagPools tags = MakeTagPools(c);
  SequenceKv a, b;
  a.Init(c);
  b.Init(c);
  ASSERT_TRUE(a.Reserve(c, 6).ok());
  int64_t slots[6];
  a.Append(c, 0, 6, slots);
  for (int i = 0; i < 6; ++i) Stamp(tags, c, a, 0, 0, i, 10 * (i + 1));
  ASSERT_TRUE(b.SharePrefix(c, a, 4).ok());
  const int64_t before = c.pages_in_use();
  // Dropping slot 0 of `a` rewrites its first two (shared) pages.
  KvMoves moves;
  ASSERT_TRUE(a.Retain(c, 0, 0, {1, 2, 3, 4, 5}, &moves).ok());
  ApplyMoves(tags, 0, moves);
  ExpectTags(tags, c, a, 0, 0, {20, 30, 40, 50, 60});
  ExpectTags(tags, c, b, 0, 0, {10, 20, 30, 40});  // the sharer is untouched
  // No move writes a page the sharer holds.
  for (int64_t d : moves.dst) {
    for (int i = 0; i < 4; ++i) EXPECT_NE(d, b.SlotOf(c, 0, 0, i));
  }
  // Keeping a page-aligned prefix of a shared page list copies the untouched
  // slots of a replaced page and moves nothing else.
  SequenceKv d;
  d.Init(c);
  ASSERT_TRUE(d.SharePrefix(c, b, 4).ok());
  KvMoves prefix_moves;
  ASSERT_TRUE(d.Retain(c, 0, 0, {0, 1, 2}, &prefix_moves).ok());
  EXPECT_TRUE(prefix_moves.empty());
  EXPECT_TRUE(d.positions_dense(0, 0));
  d.Release(c);
  KvMoves drop_second;
  SequenceKv e;
  e.Init(c);
  ASSERT_TRUE(e.SharePrefix(c, b, 4).ok());
  ASSERT_TRUE(e.Retain(c, 0, 0, {0, 2, 3}, &drop_second).ok());
  ApplyMoves(tags, 0, drop_second);
  ExpectTags(tags, c, e, 0, 0, {10, 30, 40});
  ExpectTags(tags, c, b, 0, 0, {10, 20, 30, 40});
  EXPECT_FALSE(e.positions_dense(0, 0));
  e.Release(c);
  // a: 3 pages (two private copies + its own third page); b: 2 shared pages.
  EXPECT_EQ(c.pages_in_use(), before + 2);
  a.Release(c);
  b.Release(c);
  EXPECT_EQ(c.pages_in_use(), 0);
}

TEST(SequenceKvRetainTest, RejectsBadKeepLists) {
  auto cache = KvCache::Create({{.n_kv_heads = 1, .d_qk = 2, .d_vo = 2}},
                               {.page_size = 2, .max_bytes = 1 << 20});
  ASSERT_TRUE(cache.ok());
  KvCache& c = **cache;
  SequenceKv a;
  a.Init(c);
  ASSERT_TRUE(a.Reserve(c, 3).ok());
  int64_t slots[3];
  a.Append(c, 0, 3, slots);
  KvMoves m;
  EXPECT_EQ(a.Retain(c, 0, 0, {1, 1}, &m).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Retain(c, 0, 0, {2, 1}, &m).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Retain(c, 0, 0, {3}, &m).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Retain(c, 1, 0, {0}, &m).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.num_tokens(0, 0), 3);
  EXPECT_TRUE(m.empty());
  ASSERT_TRUE(a.Retain(c, 0, 0, {}, &m).ok());
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(a.num_pages(), 0);
  a.Release(c);
}

}  // namespace
}  // namespace latentkv::worker
