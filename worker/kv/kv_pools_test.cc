// KvPools and ExportKv/ImportKv: the data plane of the KV cache, on every KV
// dtype, checked against rows the test builds itself.
#include "worker/kv/kv_pools.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "worker/kv/kv_io.h"

namespace latentkv::worker {
namespace {

std::vector<LayerKvShape> Layers() {
  return {{.n_kv_heads = 2, .d_qk = 6, .d_vo = 4},
          {.n_kv_heads = 2, .d_qk = 4, .d_vo = 10}};
}

// Head h of every layer gets k * (1 + h) and v * (1 + h).
KvScales Scales(float k, float v) {
  KvScales s;
  for (const LayerKvShape& l : Layers()) {
    s.k.emplace_back();
    s.v.emplace_back();
    for (int32_t h = 0; h < l.n_kv_heads; ++h) {
      s.k.back().push_back(k * (1 + h));
      s.v.back().push_back(v * (1 + h));
    }
  }
  return s;
}

struct Pools {
  std::unique_ptr<kernels::Backend> backend = kernels::MakeCpuBackend();
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<KvPools> pools;
  explicit Pools(DType dtype, int32_t page_size = 3) {
    cache = std::move(*KvCache::Create(
        Layers(),
        {.page_size = page_size, .max_bytes = 1 << 20, .dtype = dtype}));
    auto p = KvPools::Create(backend.get(), *cache, Scales(0.05f, 0.02f));
    EXPECT_TRUE(p.ok()) << p.status();
    pools = std::move(*p);
  }
};

// A packed row (position, K, V in `dtype`) of random values in [-4, 4].
std::string RandomRow(const LayerKvShape& s, DType dtype, float ks, float vs,
                      int32_t pos, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-4.0f, 4.0f);
  std::vector<float> k(s.d_qk), v(s.d_vo);
  for (float& x : k) x = d(rng);
  for (float& x : v) x = d(rng);
  const int64_t e = DTypeSize(dtype);
  std::string row(KvRowBytes(dtype, s.d_qk, s.d_vo), '\0');
  std::memcpy(row.data(), &pos, 4);
  kernels::KvFromF32(k.data(), s.d_qk, dtype, ks, row.data() + 4);
  kernels::KvFromF32(v.data(), s.d_vo, dtype, vs, row.data() + 4 + e * s.d_qk);
  return row;
}

class KvPoolsTest : public ::testing::TestWithParam<DType> {};

// Random appends and evictions, with a sharer holding a prefix: after every
// Retain + Apply, each (layer, head) reads back exactly the rows it kept
// (moves never convert), and the sharer's rows never change.
TEST_P(KvPoolsTest, RetainMovesKeepTheKeptRows) {
  const DType dtype = GetParam();
  Pools s(dtype);
  KvCache& c = *s.cache;
  std::mt19937 rng(11);
  SequenceKv kv;
  kv.Init(c);
  // model[layer][head]: the packed rows held, in order.
  std::vector<std::vector<std::vector<std::string>>> model(2);
  for (int32_t l = 0; l < 2; ++l) model[l].resize(2);
  int32_t pos = 0;
  SequenceKv sharer;
  std::vector<std::vector<std::vector<std::string>>> shared_model;
  auto check = [&](const SequenceKv& seq, const auto& want) {
    for (int32_t l = 0; l < 2; ++l) {
      for (int32_t h = 0; h < 2; ++h) {
        ASSERT_EQ(seq.num_tokens(l, h),
                  static_cast<int64_t>(want[l][h].size()));
        std::vector<int64_t> slots;
        for (int64_t i = 0; i < seq.num_tokens(l, h); ++i) {
          slots.push_back(seq.SlotOf(c, l, h, i));
        }
        std::string got;
        ASSERT_TRUE(s.pools->ReadRows(l, slots, &got).ok());
        std::string expect;
        for (const std::string& r : want[l][h]) expect += r;
        ASSERT_EQ(got, expect) << "layer " << l << " head " << h;
      }
    }
  };
  for (int round = 0; round < 25; ++round) {
    const int64_t n = std::uniform_int_distribution<int>(1, 7)(rng);
    ASSERT_TRUE(kv.Reserve(c, n).ok());
    for (int32_t l = 0; l < 2; ++l) {
      std::vector<int64_t> appended(n * 2);
      kv.Append(c, l, n, appended.data());
      for (int32_t h = 0; h < 2; ++h) {
        std::vector<int64_t> slots;
        std::string rows;
        for (int64_t t = 0; t < n; ++t) {
          slots.push_back(appended[t * 2 + h]);
          std::string r =
              RandomRow(c.shape(l), dtype, 0.05f * (1 + h), 0.02f * (1 + h),
                        pos + static_cast<int32_t>(t), rng);
          rows += r;
          model[l][h].push_back(std::move(r));
        }
        ASSERT_TRUE(
            s.pools->WriteRows(l, slots, rows.data(), rows.size()).ok());
      }
    }
    pos += static_cast<int32_t>(n);
    if (round == 3) {  // a sharer takes the whole pages held so far
      int64_t least = kv.max_tokens();
      for (int32_t l = 0; l < 2; ++l) {
        for (int32_t h = 0; h < 2; ++h) {
          least = std::min(least, kv.num_tokens(l, h));
        }
      }
      const int64_t shared = least / c.page_size() * c.page_size();
      ASSERT_GT(shared, 0);
      sharer.Init(c);
      ASSERT_TRUE(sharer.SharePrefix(c, kv, shared).ok());
      shared_model = model;
      for (auto& layer : shared_model) {
        for (auto& head : layer) head.resize(shared);
      }
    }
    const int32_t l = std::uniform_int_distribution<int>(0, 1)(rng);
    const int32_t h = std::uniform_int_distribution<int>(0, 1)(rng);
    std::vector<int64_t> keep;
    std::vector<std::string> kept;
    for (int64_t i = 0; i < kv.num_tokens(l, h); ++i) {
      if (std::bernoulli_distribution(0.7)(rng)) {
        keep.push_back(i);
        kept.push_back(model[l][h][i]);
      }
    }
    KvMoves moves;
    ASSERT_TRUE(kv.Retain(c, l, h, keep, &moves).ok());
    ASSERT_TRUE(s.pools->Apply(l, moves).ok());
    model[l][h] = kept;
    check(kv, model);
    if (round >= 3) check(sharer, shared_model);
  }
  kv.Release(c);
  sharer.Release(c);
  EXPECT_EQ(c.pages_in_use(), 0);
}

// Values written as f32 read back within the dtype's rounding: a relative
// half-ulp (bf16 2^-8, f16 2^-11, fp8 2^-4), and for fp8 values below the
// smallest normal (2^-6 times the scale) half a subnormal step, 2^-10 times
// the scale.
TEST_P(KvPoolsTest, F32RoundTripWithinTheDtypesRounding) {
  const DType dtype = GetParam();
  Pools s(dtype, 4);
  KvCache& c = *s.cache;
  SequenceKv kv;
  kv.Init(c);
  const int64_t n = 9;
  ASSERT_TRUE(kv.Reserve(c, n).ok());
  const LayerKvShape& sh = c.shape(1);
  std::vector<int64_t> slots(n * 2);
  kv.Append(c, 0, n, slots.data());
  kv.Append(c, 1, n, slots.data());
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-3.0f, 3.0f);
  std::vector<float> k(n * 2 * sh.d_qk), v(n * 2 * sh.d_vo);
  for (float& x : k) x = d(rng);
  for (float& x : v) x = d(rng);
  std::vector<int32_t> pos(n);
  for (int64_t t = 0; t < n; ++t) pos[t] = static_cast<int32_t>(100 + t);
  // The model runner's write path.
  s.backend->WriteKv(k.data(), v.data(), pos.data(), n, slots.data(),
                     s.pools->view(1));
  const double rel = dtype == DType::kF32    ? 0
                     : dtype == DType::kBF16 ? 1.0 / 256
                     : dtype == DType::kF16  ? 1.0 / 2048
                                             : 1.0 / 16;
  // fp8 subnormals (scale 0.05 for K, 0.02 for V); f16's lie below 6e-5.
  const double abs_tol = dtype == DType::kF8E4M3 ? 0.1 / 1024 : 1e-7;
  for (int32_t h = 0; h < 2; ++h) {
    std::vector<int64_t> hs;
    for (int64_t t = 0; t < n; ++t) hs.push_back(slots[t * 2 + h]);
    std::vector<float> rk(n * sh.d_qk), rv(n * sh.d_vo);
    std::vector<int32_t> rp(n);
    ASSERT_TRUE(
        s.pools->ReadF32(1, h, hs, rk.data(), rv.data(), rp.data()).ok());
    for (int64_t t = 0; t < n; ++t) {
      EXPECT_EQ(rp[t], pos[t]);
      for (int32_t j = 0; j < sh.d_qk; ++j) {
        const float want = k[(t * 2 + h) * sh.d_qk + j];
        EXPECT_LE(std::abs(rk[t * sh.d_qk + j] - want),
                  rel * std::abs(want) + abs_tol)
            << DTypeName(dtype);
      }
      for (int32_t j = 0; j < sh.d_vo; ++j) {
        const float want = v[(t * 2 + h) * sh.d_vo + j];
        EXPECT_LE(std::abs(rv[t * sh.d_vo + j] - want),
                  rel * std::abs(want) + abs_tol);
      }
    }
  }
  kv.Release(c);
}

// Export from one cache, import into another: the same rows, the dtype in
// the snapshot, dense positions recognised; a dtype mismatch is refused.
TEST_P(KvPoolsTest, ExportImportRoundTrip) {
  const DType dtype = GetParam();
  Pools a(dtype), b(dtype);
  SequenceKv src;
  src.Init(*a.cache);
  const int64_t n = 8;
  ASSERT_TRUE(src.Reserve(*a.cache, n).ok());
  std::mt19937 rng(5);
  for (int32_t l = 0; l < 2; ++l) {
    std::vector<int64_t> slots(n * 2);
    src.Append(*a.cache, l, n, slots.data());
    for (int32_t h = 0; h < 2; ++h) {
      std::vector<int64_t> hs;
      std::string rows;
      for (int64_t t = 0; t < n; ++t) {
        hs.push_back(slots[t * 2 + h]);
        rows += RandomRow(a.cache->shape(l), dtype, 0.05f * (1 + h),
                          0.02f * (1 + h), static_cast<int32_t>(t), rng);
      }
      ASSERT_TRUE(a.pools->WriteRows(l, hs, rows.data(), rows.size()).ok());
    }
  }
  KvMoves moves;
  ASSERT_TRUE(src.Retain(*a.cache, 1, 0, {0, 2, 5}, &moves).ok());
  ASSERT_TRUE(a.pools->Apply(1, moves).ok());
  auto snap = ExportKv(*a.cache, *a.pools, src);
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->dtype, dtype);
  EXPECT_EQ(snap->rows[1][0].size(), 3 * snap->row_bytes(1));
  SequenceKv dst;
  dst.Init(*b.cache);
  ASSERT_TRUE(ImportKv(*b.cache, *b.pools, dst, *snap).ok());
  EXPECT_TRUE(dst.positions_dense(0, 0));
  EXPECT_FALSE(dst.positions_dense(1, 0));  // positions 0, 2, 5
  EXPECT_TRUE(dst.positions_dense(1, 1));
  auto again = ExportKv(*b.cache, *b.pools, dst);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->rows, snap->rows);
  dst.Release(*b.cache);

  Pools other(dtype == DType::kF32 ? DType::kBF16 : DType::kF32);
  SequenceKv x;
  x.Init(*other.cache);
  const absl::Status st = ImportKv(*other.cache, *other.pools, x, *snap);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(other.cache->pages_in_use(), 0);
  src.Release(*a.cache);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, KvPoolsTest,
                         ::testing::Values(DType::kF32, DType::kBF16,
                                           DType::kF16, DType::kF8E4M3),
                         [](const auto& info) {
                           return std::string(DTypeName(info.param));
                         });

TEST(KvPoolsCreateTest, PoolsAreZeroedAndSized) {
  auto backend = kernels::MakeCpuBackend();
  auto cache = KvCache::Create(
      Layers(), {.page_size = 3, .max_bytes = 4096, .dtype = DType::kBF16});
  ASSERT_TRUE(cache.ok());
  auto pools = KvPools::Create(backend.get(), **cache);
  ASSERT_TRUE(pools.ok());
  SequenceKv kv;
  kv.Init(**cache);
  ASSERT_TRUE(kv.Reserve(**cache, 1).ok());
  std::vector<int64_t> slots(2);
  kv.Append(**cache, 0, 1, slots.data());
  std::vector<float> k(6), v(4);
  int32_t p = -1;
  ASSERT_TRUE((*pools)->ReadF32(0, 1, {slots[1]}, k.data(), v.data(), &p).ok());
  EXPECT_EQ(p, 0);
  EXPECT_EQ(k, std::vector<float>(6, 0.0f));
  EXPECT_EQ((*pools)->row_bytes(0), 4 + 2 * (6 + 4));
  kv.Release(**cache);
}

TEST(KvPoolsCreateTest, Fp8NeedsGoodScales) {
  auto backend = kernels::MakeCpuBackend();
  auto cache = KvCache::Create(
      Layers(),
      {.page_size = 3, .max_bytes = 1 << 16, .dtype = DType::kF8E4M3});
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(KvPools::Create(backend.get(), **cache).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (float bad : {0.0f, -1.0f, std::nanf(""), INFINITY}) {
    KvScales s = Scales(1.0f, 1.0f);
    s.v[1][1] = bad;
    EXPECT_EQ(KvPools::Create(backend.get(), **cache, s).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  KvScales short_heads = Scales(1.0f, 1.0f);
  short_heads.k[0].pop_back();
  EXPECT_EQ(
      KvPools::Create(backend.get(), **cache, short_heads).status().code(),
      absl::StatusCode::kInvalidArgument);
  auto ok = KvPools::Create(backend.get(), **cache, Scales(0.5f, 0.25f));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)->k_scale(1, 1), 1.0f);
  EXPECT_EQ((*ok)->v_scale(0, 0), 0.25f);
}

TEST(KvPoolsCreateTest, HostAccessOnlyForF32OnTheCpu) {
  Pools f32(DType::kF32), bf16(DType::kBF16);
  auto hp = f32.pools->HostF32(0);
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->k, f32.pools->view(0).k);
  EXPECT_EQ(bf16.pools->HostF32(0).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace latentkv::worker
