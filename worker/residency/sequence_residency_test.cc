#include "worker/residency/sequence_residency.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

constexpr int32_t kLayers = 2, kHeads = 4, kKv = 2, kD = 8, kPage = 4;
constexpr float kInvFreq[kD / 2] = {1.0f, 0.1f, 0.01f, 0.001f};

struct Fixture {
  std::unique_ptr<kernels::Backend> backend = kernels::MakeCpuBackend();
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<KvPools> pools;
  SequenceKv kv;
  std::mt19937 rng{11};
  std::normal_distribution<float> nd{0.0f, 1.0f};
  int32_t next_pos = 0;

  Fixture() {
    std::vector<LayerKvShape> shapes(kLayers, {kKv, kD, kD});
    cache =
        *KvCache::Create(shapes, {.page_size = kPage, .max_bytes = 1 << 22});
    pools = *KvPools::Create(backend.get(), *cache);
    kv.Init(*cache);
  }
  ~Fixture() { kv.Release(*cache); }

  // Appends `len` random tokens to every layer (keys of token at position p
  // are scaled by `boost(p)`), then runs AfterLayer with random queries.
  absl::Status Step(SequenceResidency& r, int32_t len,
                    float (*boost)(int32_t) = nullptr) {
    absl::Status st = kv.Reserve(*cache, len);
    if (!st.ok()) return st;
    std::vector<int32_t> pos(len);
    for (int32_t t = 0; t < len; ++t) pos[t] = next_pos++;
    for (int32_t l = 0; l < kLayers; ++l) {
      std::vector<int64_t> slots(len * kKv);
      kv.Append(*cache, l, len, slots.data(), pos[0]);
      std::vector<float> k(len * kKv * kD), v(len * kKv * kD);
      for (int32_t t = 0; t < len; ++t) {
        for (int32_t h = 0; h < kKv; ++h) {
          const float b = boost ? boost(pos[t]) : 1.0f;
          for (int32_t i = 0; i < kD; ++i) {
            // Keys point along +1 so that queries along +1 favour boosted
            // keys; V random.
            k[(t * kKv + h) * kD + i] = b * (1.0f + 0.1f * nd(rng));
            v[(t * kKv + h) * kD + i] = nd(rng);
          }
        }
      }
      backend->WriteKv(k.data(), v.data(), pos.data(), len, slots.data(),
                       pools->view(l));
      std::vector<float> q(len * kHeads * kD);
      for (float& x : q) x = 1.0f + 0.1f * nd(rng);
      st = r.AfterLayer(*cache, *pools, kv, l, q.data(), pos.data(), len,
                        kernels::RopeTable{kInvFreq, kD});
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }

  std::vector<int32_t> Positions(int32_t l, int32_t h) {
    std::vector<int64_t> slots;
    for (int64_t i = 0; i < kv.num_tokens(l, h); ++i) {
      slots.push_back(kv.SlotOf(*cache, l, h, i));
    }
    std::vector<int32_t> out(slots.size());
    std::vector<float> k(slots.size() * kD);
    EXPECT_TRUE(
        pools->ReadF32(l, h, slots, k.data(), nullptr, out.data()).ok());
    return out;
  }
};

std::vector<int32_t> Dqk() { return std::vector<int32_t>(kLayers, kD); }

TEST(SequenceResidencyTest, PromptEvictionHitsBudgetsKeepsWindowAndFreesPages) {
  ResidencyOptions o;
  o.policy = "spindle";
  o.codebook_layers = 0;
  o.budget = 0.25;
  o.pyramid_beta = 1.0;  // uniform: 25 of 100 per layer
  o.window = 6;
  o.pool_kernel = 1;
  auto plan = ResidencyPlan::Create(o, kLayers, kHeads, kKv);
  ASSERT_TRUE(plan.ok());
  Fixture f;
  SequenceResidency r(*plan, Dqk(), kHeads, /*prompt_len=*/100);
  // Prompt in chunks of 30, 30, 40: heavy hitters at positions 7 and 51.
  auto boost = [](int32_t p) { return p == 7 || p == 51 ? 4.0f : 1.0f; };
  ASSERT_TRUE(f.Step(r, 30, boost).ok());
  ASSERT_TRUE(f.Step(r, 30, boost).ok());
  EXPECT_EQ(f.kv.num_tokens(0, 0), 60);  // nothing evicted before the end
  const int64_t bytes_before =
      f.cache->bytes_in_use() +
      40 * kLayers * kKv * f.cache->page_bytes(0) / kPage;
  ASSERT_TRUE(f.Step(r, 40, boost).ok());
  for (int32_t l = 0; l < kLayers; ++l) {
    for (int32_t h = 0; h < kKv; ++h) {
      std::vector<int32_t> p = f.Positions(l, h);
      ASSERT_EQ(p.size(), 25u);
      EXPECT_TRUE(std::is_sorted(p.begin(), p.end()));
      for (int32_t w = 94; w < 100; ++w) {  // the window is kept
        EXPECT_TRUE(std::count(p.begin(), p.end(), w)) << w;
      }
      EXPECT_TRUE(std::count(p.begin(), p.end(), 7));
      EXPECT_TRUE(std::count(p.begin(), p.end(), 51));
    }
  }
  EXPECT_EQ(r.evicted_slots(), 75 * kLayers * kKv);
  // Pages really went back: 25 tokens = 7 pages per head.
  EXPECT_EQ(f.kv.num_pages(), 7 * kLayers * kKv);
  EXPECT_LT(f.cache->bytes_in_use(), bytes_before / 3);
  // Decode tokens after the prompt are not evicted (SnapKV semantics).
  ASSERT_TRUE(f.Step(r, 1).ok());
  EXPECT_EQ(f.kv.num_tokens(1, 1), 26);
}

TEST(SequenceResidencyTest, CapacityBoundsEveryHeadOverALongStream) {
  ResidencyOptions o;
  o.capacity = {32, 20};
  o.window = 4;
  auto plan = ResidencyPlan::Create(o, kLayers, kHeads, kKv);
  ASSERT_TRUE(plan.ok());
  Fixture f;
  f.kv.SetCapacity((*plan)->capacities());
  SequenceResidency r(*plan, Dqk(), kHeads, /*prompt_len=*/10);
  int64_t max_bytes = 0;
  // 4x the largest capacity, in chunks capped by the room left.
  int32_t produced = 0;
  std::mt19937 rng(5);
  while (produced < 4 * 32) {
    const int64_t room = f.kv.Room();
    ASSERT_GE(room, 1);
    const int32_t len = static_cast<int32_t>(
        std::min<int64_t>(room, std::uniform_int_distribution<int>(1, 7)(rng)));
    ASSERT_TRUE(f.Step(r, len).ok());
    produced += len;
    for (int32_t h = 0; h < kKv; ++h) {
      ASSERT_LT(f.kv.num_tokens(0, h), 32);
      ASSERT_LT(f.kv.num_tokens(1, h), 20);
      // The newest token is always resident.
      ASSERT_EQ(f.Positions(0, h).back(), f.next_pos - 1);
    }
    max_bytes = std::max(max_bytes, f.cache->bytes_in_use());
  }
  // Memory bound: at most capacity tokens' pages per head.
  const int64_t bound = kKv *
                        ((32 + kPage - 1) / kPage + (20 + kPage - 1) / kPage) *
                        f.cache->page_bytes(0);
  EXPECT_LE(max_bytes, bound);
  // Reserving past the capacity is refused.
  EXPECT_EQ(f.kv.Reserve(*f.cache, f.kv.Room() + 1).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace latentkv::worker
