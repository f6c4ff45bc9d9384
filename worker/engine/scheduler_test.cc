#include "worker/engine/scheduler.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

// One layer, one KV head, page_size 4, 16-dim K/V: page_bytes is
// 4 * (16 + 16) * 4 + 4 * 4 = 528 bytes.
std::unique_ptr<KvCache> MakeCache(int32_t pages) {
  KvCacheOptions o;
  o.page_size = 4;
  o.max_bytes = int64_t{pages} * 528;
  auto c = KvCache::Create({{1, 16, 16}}, o);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(*c);
}

std::unique_ptr<Sequence> MakeSeq(const std::string& id, int prompt,
                                  int max_new = 100) {
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->tokens.assign(prompt, 7);
  s->prompt_len = prompt;
  s->max_new_tokens = max_new;
  s->max_total_tokens = 1000;
  return s;
}

// Applies a step as the engine would: store the chunk's K/V (append to the
// reserved pages), count the tokens cached, append a sampled token.
void Apply(KvCache& cache, const std::vector<ScheduledChunk>& plan) {
  for (const auto& c : plan) {
    std::vector<int64_t> slots(c.len);
    c.seq->kv.Append(cache, 0, c.len, slots.data());
    c.seq->num_cached += c.len;
    if (c.sample) c.seq->tokens.push_back(9);
  }
}

struct Expect {
  std::string id;
  int64_t start;
  int32_t len;
  bool sample;
};

void ExpectPlan(const std::vector<ScheduledChunk>& plan,
                const std::vector<Expect>& want, int step) {
  ASSERT_EQ(plan.size(), want.size()) << "step " << step;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(plan[i].seq->id, want[i].id) << "step " << step << " chunk " << i;
    EXPECT_EQ(plan[i].start, want[i].start)
        << "step " << step << " chunk " << i;
    EXPECT_EQ(plan[i].len, want[i].len) << "step " << step << " chunk " << i;
    EXPECT_EQ(plan[i].sample, want[i].sample)
        << "step " << step << " chunk " << i;
  }
}

TEST(SchedulerTest, ChunkedPrefillThenDecodeMixesWithNewPrefill) {
  auto cache = MakeCache(64);
  Scheduler s({/*max_running=*/8, /*max_step_tokens=*/4, /*max_waiting=*/8},
              cache.get());
  ASSERT_TRUE(s.Enqueue(MakeSeq("a", 10)).ok());
  const std::vector<std::vector<Expect>> steps = {
      {{"a", 0, 4, false}},
      {{"a", 4, 4, false}},
      {{"a", 8, 2, true}},
      {{"a", 10, 1, true}},
  };
  for (size_t i = 0; i < steps.size(); ++i) {
    auto plan = s.Schedule();
    ExpectPlan(plan, steps[i], i);
    Apply(*cache, plan);
  }
  // A new prompt shares the budget with a's decode token: a goes first.
  ASSERT_TRUE(s.Enqueue(MakeSeq("b", 6)).ok());
  const std::vector<std::vector<Expect>> mixed = {
      {{"a", 11, 1, true}, {"b", 0, 3, false}},
      {{"a", 12, 1, true}, {"b", 3, 3, true}},
      {{"a", 13, 1, true}, {"b", 6, 1, true}},
  };
  for (size_t i = 0; i < mixed.size(); ++i) {
    auto plan = s.Schedule();
    ExpectPlan(plan, mixed[i], i);
    Apply(*cache, plan);
  }
  EXPECT_EQ(s.num_running(), 2);
  EXPECT_EQ(s.num_waiting(), 0);
}

TEST(SchedulerTest, MaxRunningBoundsTheBatch) {
  auto cache = MakeCache(64);
  Scheduler s({2, 100, 8}, cache.get());
  for (const char* id : {"a", "b", "c"})
    ASSERT_TRUE(s.Enqueue(MakeSeq(id, 2)).ok());
  auto plan = s.Schedule();
  ExpectPlan(plan, {{"a", 0, 2, true}, {"b", 0, 2, true}}, 0);
  EXPECT_EQ(s.num_waiting(), 1);
  Apply(*cache, plan);
  ASSERT_NE(s.Remove("a"), nullptr);
  plan = s.Schedule();
  ExpectPlan(plan, {{"b", 2, 1, true}, {"c", 0, 2, true}}, 1);
}

TEST(SchedulerTest, PreemptsNewestWhenPagesRunOutAndRecomputesLater) {
  // 4 pages of 4 slots = 16 token slots.
  auto cache = MakeCache(4);
  Scheduler s({8, 100, 8}, cache.get());
  ASSERT_TRUE(s.Enqueue(MakeSeq("old", 7, 9)).ok());
  ASSERT_TRUE(s.Enqueue(MakeSeq("new", 7, 9)).ok());
  auto plan = s.Schedule();  // old: 2 pages, new: 2 pages -> cache full
  ExpectPlan(plan, {{"old", 0, 7, true}, {"new", 0, 7, true}}, 0);
  Apply(*cache, plan);  // both now hold 8 tokens, 7 cached
  plan = s.Schedule();  // 8th token of each fits in the 2nd page
  ExpectPlan(plan, {{"old", 7, 1, true}, {"new", 7, 1, true}}, 1);
  Apply(*cache, plan);  // 9 tokens each, 8 cached
  EXPECT_EQ(cache->allocator(0).num_free(), 0);
  // old needs a 3rd page: new is preempted and its pages go to old.
  plan = s.Schedule();
  ExpectPlan(plan, {{"old", 8, 1, true}}, 2);
  EXPECT_EQ(s.preemptions(), 1);
  EXPECT_EQ(s.num_waiting(), 1);
  Apply(*cache, plan);
  auto gone = s.Remove("old");
  ASSERT_NE(gone, nullptr);
  EXPECT_EQ(cache->allocator(0).num_free(), 4);
  // new is re-admitted and recomputes all 9 of its tokens (prompt+generated).
  plan = s.Schedule();
  ExpectPlan(plan, {{"new", 0, 9, true}}, 3);
}

TEST(SchedulerTest, RejectsWhenQueueFullOrRequestNeverFits) {
  auto cache = MakeCache(4);
  Scheduler s({8, 100, 2}, cache.get());
  ASSERT_TRUE(s.Enqueue(MakeSeq("a", 2, 4)).ok());
  ASSERT_TRUE(s.Enqueue(MakeSeq("b", 2, 4)).ok());
  EXPECT_EQ(s.Enqueue(MakeSeq("c", 2, 4)).code(),
            absl::StatusCode::kResourceExhausted);
  Scheduler t({8, 100, 8}, cache.get());
  // 17 tokens need 5 pages; the cache has 4: never, not "later".
  EXPECT_EQ(t.Enqueue(MakeSeq("big", 10, 7)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, RemoveReleasesPagesOfRunningAndWaiting) {
  auto cache = MakeCache(8);
  Scheduler s({1, 100, 8}, cache.get());
  ASSERT_TRUE(s.Enqueue(MakeSeq("a", 9, 10)).ok());
  ASSERT_TRUE(s.Enqueue(MakeSeq("b", 3, 10)).ok());
  Apply(*cache, s.Schedule());
  EXPECT_EQ(cache->allocator(0).num_free(), 5);
  EXPECT_NE(s.Remove("b"), nullptr);
  EXPECT_NE(s.Remove("a"), nullptr);
  EXPECT_EQ(s.Remove("a"), nullptr);
  EXPECT_EQ(cache->allocator(0).num_free(), 8);
  EXPECT_TRUE(s.idle());
}

}  // namespace
}  // namespace latentkv::worker
