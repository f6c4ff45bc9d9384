#include "worker/residency/codebook_store.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

constexpr int32_t kDqk = 8, kDvo = 6, kPage = 4;
// Records per page: 4 * (8 + 6 + 1) / 5 = 12.

struct Fixture {
  std::unique_ptr<kernels::Backend> backend = kernels::MakeCpuBackend();
  // Pages of 4 * (8 + 6 + 1) * 4 = 240 bytes; 15 of them.
  std::unique_ptr<KvCache> cache = *KvCache::Create(
      {{1, kDqk, kDvo}}, {.page_size = kPage, .max_bytes = 15 * 240});
  std::unique_ptr<KvPools> pools = *KvPools::Create(backend.get(), *cache);
  HostKvPool hp = *pools->HostF32(0);
  SequenceKv kv;
  CodebookStore store;
  Fixture() { kv.Init(*cache); }
  ~Fixture() { kv.Release(*cache); }
  SequenceKv::AuxPages& aux() { return kv.aux(0, 0); }
};

// n random vectors around `clusters` directions (0: all random).
void Make(int64_t n, int32_t d, int clusters, uint32_t seed,
          std::vector<float>* x) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> centre(std::max(clusters, 1) * d);
  for (float& c : centre) c = nd(rng);
  x->resize(n * d);
  for (int64_t t = 0; t < n; ++t) {
    const float scale = 0.5f + std::abs(nd(rng));
    for (int32_t i = 0; i < d; ++i) {
      (*x)[t * d + i] =
          clusters > 0
              ? scale * (centre[(t % clusters) * d + i] + 0.01f * nd(rng))
              : nd(rng);
    }
  }
}

// n tokens: K around `k_clusters` directions and V around `v_clusters`
// (Make with seeds `seed` and `seed + 1`), at positions offset + stride * i.
struct Tokens {
  std::vector<float> k, v;
  std::vector<int32_t> pos;
};
Tokens MakeTokens(int n, int k_clusters, int v_clusters, uint32_t seed,
                  int stride = 1, int offset = 0) {
  Tokens t;
  Make(n, kDqk, k_clusters, seed, &t.k);
  Make(n, kDvo, v_clusters, seed + 1, &t.v);
  t.pos.resize(n);
  for (int i = 0; i < n; ++i) t.pos[i] = offset + stride * i;
  return t;
}

TEST(CodebookStoreTest, ThetaOneReconstructsExactlyAndCountsPages) {
  Fixture f;
  const auto [k, v, pos] = MakeTokens(30, 0, 0, 1, /*stride=*/3);
  ASSERT_TRUE(f.store
                  .Add(*f.cache, f.hp, f.aux(), 0, k.data(), v.data(),
                       pos.data(), 30, 1.0f, 1.0f, /*cluster=*/true)
                  .ok());
  EXPECT_EQ(f.aux().tokens, 30);
  EXPECT_EQ(f.store.num_k_codewords(), 30);
  // 30 codewords: 8 pages; 30 records: 3 pages of 12.
  EXPECT_EQ(f.aux().codewords.size(), 8u);
  EXPECT_EQ(f.aux().records.size(), 3u);
  EXPECT_EQ(f.cache->pages_in_use(), 11);
  std::vector<float> rk(30 * kDqk), rv(30 * kDvo);
  std::vector<int32_t> rp(30);
  f.store.Reconstruct(*f.cache, f.hp, f.aux(), 0, rk.data(), rv.data(),
                      rp.data());
  EXPECT_EQ(rp, pos);
  for (size_t i = 0; i < k.size(); ++i) {
    EXPECT_NEAR(rk[i], k[i], 1e-6 * (1 + std::abs(k[i])));
  }
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_NEAR(rv[i], v[i], 1e-6 * (1 + std::abs(v[i])));
  }
}

TEST(CodebookStoreTest, ClustersShareCodewordsAndRetainFreesPages) {
  Fixture f;
  // K around 3 directions, V around 2, small noise.
  const auto [k, v, pos] = MakeTokens(48, 3, 2, 3);
  ASSERT_TRUE(f.store
                  .Add(*f.cache, f.hp, f.aux(), 0, k.data(), v.data(),
                       pos.data(), 48, 0.98f, 0.95f, true)
                  .ok());
  EXPECT_EQ(f.store.num_k_codewords(), 3);
  EXPECT_EQ(f.store.num_v_codewords(), 2);
  // 1 codeword page + 4 record pages, against 12 pages uncompressed.
  EXPECT_EQ(f.cache->pages_in_use(), 5);
  EXPECT_EQ(f.store.data_bytes(f.aux(), kDqk, kDvo), 48 * 16 + 3 * 32 + 2 * 24);
  std::vector<float> rk(48 * kDqk), rv(48 * kDvo);
  std::vector<int32_t> rp(48);
  f.store.Reconstruct(*f.cache, f.hp, f.aux(), 0, rk.data(), rv.data(),
                      rp.data());
  for (int t = 0; t < 48; ++t) {
    double dot = 0, a = 0, b = 0;
    for (int i = 0; i < kDqk; ++i) {
      dot += double{rk[t * kDqk + i]} * k[t * kDqk + i];
      a += double{rk[t * kDqk + i]} * rk[t * kDqk + i];
      b += double{k[t * kDqk + i]} * k[t * kDqk + i];
    }
    EXPECT_GT(dot / std::sqrt(a * b), 0.98) << t;
    EXPECT_NEAR(std::sqrt(a), std::sqrt(b), 1e-4 * std::sqrt(b));  // magnitude
  }
  // Keep only tokens of K cluster 1 (t % 3 == 1): the other K codewords go.
  std::vector<int64_t> keep;
  for (int t = 1; t < 48; t += 3) keep.push_back(t);
  f.store.Retain(*f.cache, f.hp, f.aux(), 0, keep);
  EXPECT_EQ(f.aux().tokens, 16);
  EXPECT_EQ(f.store.num_k_codewords(), 1);
  EXPECT_EQ(f.cache->pages_in_use(), 1 + 2);
  std::vector<float> k2(16 * kDqk), v2(16 * kDvo);
  std::vector<int32_t> p2(16);
  f.store.Reconstruct(*f.cache, f.hp, f.aux(), 0, k2.data(), v2.data(),
                      p2.data());
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(p2[j], keep[j]);
    for (int i = 0; i < kDqk; ++i) {
      EXPECT_FLOAT_EQ(k2[j * kDqk + i], rk[keep[j] * kDqk + i]);
    }
    for (int i = 0; i < kDvo; ++i) {
      EXPECT_FLOAT_EQ(v2[j * kDvo + i], rv[keep[j] * kDvo + i]);
    }
  }
}

TEST(CodebookStoreTest, DecodeTokensJoinOrCreateCodewords) {
  Fixture f;
  const auto [k, v, pos] = MakeTokens(6, 2, 2, 5);
  ASSERT_TRUE(f.store
                  .Add(*f.cache, f.hp, f.aux(), 0, k.data(), v.data(),
                       pos.data(), 6, 0.98f, 0.95f, true)
                  .ok());
  ASSERT_EQ(f.store.num_k_codewords(), 2);
  // A scaled copy of token 0 joins; an orthogonal-ish random vector does not.
  std::vector<float> near(k.begin(), k.begin() + kDqk);
  for (float& x : near) x *= 3.0f;
  std::vector<float> vv(v.begin(), v.begin() + kDvo);
  int32_t p = 6;
  ASSERT_TRUE(f.store
                  .Add(*f.cache, f.hp, f.aux(), 0, near.data(), vv.data(), &p,
                       1, 0.98f, 0.95f, false)
                  .ok());
  EXPECT_EQ(f.store.num_k_codewords(), 2);
  std::vector<float> far(kDqk, 0.0f);
  far[0] = 1.0f;
  far[1] = -1.0f;
  p = 7;
  ASSERT_TRUE(f.store
                  .Add(*f.cache, f.hp, f.aux(), 0, far.data(), vv.data(), &p, 1,
                       0.98f, 0.95f, false)
                  .ok());
  EXPECT_EQ(f.store.num_k_codewords(), 3);
  EXPECT_EQ(f.aux().tokens, 8);
}

TEST(CodebookStoreTest, OutOfPagesChangesNothing) {
  Fixture f;  // 15 pages in all
  const auto [k, v, pos] = MakeTokens(200, 0, 0, 7);
  const absl::Status st =
      f.store.Add(*f.cache, f.hp, f.aux(), 0, k.data(), v.data(), pos.data(),
                  200, 1.0f, 1.0f, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(f.aux().tokens, 0);
  EXPECT_EQ(f.cache->pages_in_use(), 0);
  EXPECT_EQ(f.store.num_k_codewords(), 0);
}

// Export then Import into a fresh cache reproduces every token bit for bit,
// and later tokens join the imported codewords as they would have joined the
// originals. Malformed blobs are refused with nothing allocated.
TEST(CodebookStoreTest, ExportImportRoundTripsAndRejectsMalformedBlobs) {
  Fixture src;
  const auto [k, v, pos] = MakeTokens(40, 5, 4, 3, /*stride=*/2, /*offset=*/1);
  ASSERT_TRUE(src.store
                  .Add(*src.cache, src.hp, src.aux(), 0, k.data(), v.data(),
                       pos.data(), 40, 0.9f, 0.9f, /*cluster=*/true)
                  .ok());
  ASSERT_LT(src.store.num_k_codewords(), 40);  // clustered
  const std::string blob = src.store.Export(*src.cache, src.hp, src.aux(), 0);
  ASSERT_EQ(blob.size(), 16 +
                             4 * (src.store.num_k_codewords() * kDqk +
                                  src.store.num_v_codewords() * kDvo) +
                             20 * 40);

  Fixture dst;
  ASSERT_TRUE(dst.store.Import(*dst.cache, dst.hp, dst.aux(), 0, blob).ok());
  EXPECT_EQ(dst.aux().tokens, 40);
  EXPECT_EQ(dst.store.num_k_codewords(), src.store.num_k_codewords());
  EXPECT_EQ(dst.store.num_v_codewords(), src.store.num_v_codewords());
  EXPECT_EQ(dst.cache->pages_in_use(), src.cache->pages_in_use());
  auto reconstruct = [](Fixture& f, int64_t n) {
    std::vector<float> rk(n * kDqk), rv(n * kDvo);
    std::vector<int32_t> rp(n);
    f.store.Reconstruct(*f.cache, f.hp, f.aux(), 0, rk.data(), rv.data(),
                        rp.data());
    rk.insert(rk.end(), rv.begin(), rv.end());
    for (int32_t p : rp) rk.push_back(static_cast<float>(p));
    return rk;
  };
  EXPECT_EQ(reconstruct(dst, 40), reconstruct(src, 40));
  EXPECT_EQ(dst.store.Export(*dst.cache, dst.hp, dst.aux(), 0), blob);
  // The same next tokens into both: same codewords chosen or added.
  const auto [k2, v2, pos2] =
      MakeTokens(6, 0, 0, 5, /*stride=*/2, /*offset=*/81);
  for (Fixture* f : {&src, &dst}) {
    ASSERT_TRUE(f->store
                    .Add(*f->cache, f->hp, f->aux(), 0, k2.data(), v2.data(),
                         pos2.data(), 6, 0.9f, 0.9f, /*cluster=*/true)
                    .ok());
  }
  EXPECT_EQ(reconstruct(dst, 46), reconstruct(src, 46));

  // Malformed: truncated, an index past the codewords, a negative position,
  // a NaN magnitude, and an import into a store that holds tokens.
  auto corrupt = [&](int64_t record, int word, auto value) {
    std::string b = blob;
    const int64_t at =
        static_cast<int64_t>(b.size()) - 20 * (40 - record) + 4 * word;
    std::memcpy(b.data() + at, &value, 4);
    return b;
  };
  const std::vector<std::string> bad = {
      blob.substr(0, blob.size() - 1),
      blob.substr(0, 10),
      corrupt(7, 1, int32_t{src.store.num_k_codewords() + 100}),
      corrupt(3, 3, int32_t{-1}),
      corrupt(0, 0, int32_t{-5}),
      corrupt(39, 4, std::nanf(""))};
  for (const std::string& b : bad) {
    Fixture f;
    const absl::Status st = f.store.Import(*f.cache, f.hp, f.aux(), 0, b);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_EQ(f.cache->pages_in_use(), 0);
    EXPECT_EQ(f.aux().tokens, 0);
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(
      dst.store.Import(*dst.cache, dst.hp, dst.aux(), 0, blob)));
}

// A store whose pages do not fit is ResourceExhausted, with nothing taken.
TEST(CodebookStoreTest, ImportThatDoesNotFitTakesNothing) {
  const auto [k, v, pos] = MakeTokens(100, 0, 0, 7);
  // theta 1: every token its own codeword (25 pages) -- more than the
  // 15-page fixture, so build the source in a larger cache.
  auto big = *KvCache::Create({{1, kDqk, kDvo}},
                              {.page_size = kPage, .max_bytes = 60 * 240});
  auto backend = kernels::MakeCpuBackend();
  auto big_pools = *KvPools::Create(backend.get(), *big);
  const HostKvPool big_hp = *big_pools->HostF32(0);
  SequenceKv kv;
  kv.Init(*big);
  CodebookStore store;
  ASSERT_TRUE(store
                  .Add(*big, big_hp, kv.aux(0, 0), 0, k.data(), v.data(),
                       pos.data(), 100, 1.0f, 1.0f, true)
                  .ok());
  const std::string blob = store.Export(*big, big_hp, kv.aux(0, 0), 0);
  kv.Release(*big);
  Fixture dst;
  const absl::Status st =
      dst.store.Import(*dst.cache, dst.hp, dst.aux(), 0, blob);
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_EQ(dst.cache->pages_in_use(), 0);
}

// A blob with no codewords and no records (a 16-byte header of zeros) loads
// as an empty store (it used to memcpy into an empty vector's null data,
// undefined behaviour; found by tests/fuzz/fuzz_codebook).
TEST(CodebookStoreTest, ImportsAnEmptyBlob) {
  Fixture f;
  const std::string blob(16, '\0');  // KvSnapshot::kCodebookHeaderBytes
  const absl::Status st = f.store.Import(*f.cache, f.hp, f.aux(), 0, blob);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(f.aux().tokens, 0);
  EXPECT_EQ(f.store.num_k_codewords(), 0);
}

}  // namespace
}  // namespace latentkv::worker
