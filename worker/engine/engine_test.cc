// The engine thread end to end on the real stories260K checkpoint: greedy
// outputs do not depend on batching, chunked prefill or preemption, and
// cancellation returns every KV page.
#include "worker/engine/engine.h"

#include <future>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "model/convert.h"
#include "worker/engine/stories260k_for_tests.h"

namespace latentkv::worker {
namespace {

struct Outcome {
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  absl::Status status;
};

// Submits every prompt at once and waits for all of them.
std::vector<Outcome> RunAll(Engine& e,
                            const std::vector<std::vector<int32_t>>& prompts,
                            int max_new) {
  std::vector<Outcome> out(prompts.size());
  std::vector<std::promise<void>> done(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest r;
    r.id = "r" + std::to_string(i);
    r.prompt = prompts[i];
    r.max_new_tokens = max_new;
    r.ignore_eos = true;
    Outcome* o = &out[i];
    std::promise<void>* d = &done[i];
    EXPECT_TRUE(e.Submit(std::move(r), [o, d](const GenerationEvent& ev) {
                   if (ev.token >= 0) o->tokens.push_back(ev.token);
                   if (ev.finish != FinishReason::kNone || !ev.status.ok()) {
                     o->finish = ev.finish;
                     o->status = ev.status;
                     d->set_value();
                   }
                 }).ok());
  }
  for (auto& d : done) d.get_future().wait();
  return out;
}

std::vector<std::vector<int32_t>> Prompts() {
  std::vector<std::vector<int32_t>> p;
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> t = {1};
    for (int j = 0; j < 3 + 5 * i; ++j)
      t.push_back(259 + (i * 31 + j * 7) % 250);
    p.push_back(t);
  }
  return p;
}

// Every registered backend serves the same greedy tokens as the CPU engine,
// with and without SpindleKV eviction and on a narrow KV dtype (a device
// backend joins by registering itself; the CPU one checks the harness).
class EngineOnEveryBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineOnEveryBackend, GreedyOutputsEqualTheCpuEngine) {
  for (const char* variant : {"full", "snapkv", "bf16"}) {
    SCOPED_TRACE(variant);
    EngineOptions o;
    o.kv.page_size = 4;
    if (std::string(variant) == "snapkv") {
      o.residency.policy = "spindle";
      o.residency.codebook_layers = 0;
      o.residency.budget = 0.5;
      o.residency.window = 8;
    }
    if (std::string(variant) == "bf16") o.kv.dtype = DType::kBF16;
    auto cpu = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
    auto backend = kernels::CreateBackend(GetParam());
    ASSERT_TRUE(backend.ok()) << backend.status();
    auto other = Engine::Create(Stories260k(), std::move(*backend), o);
    ASSERT_TRUE(cpu.ok() && other.ok());
    const auto want = RunAll(**cpu, Prompts(), 24);
    const auto got = RunAll(**other, Prompts(), 24);
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_TRUE(got[i].status.ok()) << got[i].status;
      EXPECT_EQ(got[i].tokens, want[i].tokens) << "prompt " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, EngineOnEveryBackend,
                         ::testing::ValuesIn(kernels::RegisteredBackends()),
                         [](const auto& info) { return info.param; });

TEST(EngineTest, BatchingChunkingAndPreemptionDoNotChangeGreedyOutputs) {
  const auto prompts = Prompts();
  // Reference: each request alone, ample memory, whole prompts per step.
  std::vector<Outcome> solo;
  {
    EngineOptions o;
    auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
    ASSERT_TRUE(e.ok());
    for (const auto& p : prompts) solo.push_back(RunAll(**e, {p}, 40)[0]);
  }
  // All at once, 7-token step budget (chunked prefill mixed with decode) and
  // KV memory for about 3 sequences, so the scheduler must preempt.
  EngineOptions o;
  o.kv.page_size = 4;
  // 5 layers * 4 heads * page_bytes(4 * (8 + 8) * 4 + 16 = 272) = 5440 per
  // 4-token page group; 48 groups = 192 tokens.
  o.kv.max_bytes = 48 * 5440;
  o.scheduler.max_step_tokens = 7;
  auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  ASSERT_TRUE(e.ok());
  const auto together = RunAll(**e, prompts, 40);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status;
    EXPECT_EQ(together[i].finish, FinishReason::kLength);
    EXPECT_EQ(together[i].tokens, solo[i].tokens) << "request " << i;
  }
  // Stats are a snapshot taken after each step: wait for the last one.
  EngineStats s;
  for (int i = 0; i < 200; ++i) {
    s = (*e)->Stats();
    if (s.running == 0 && s.kv_pages_in_use == s.prefix_cached_pages) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GT(s.preemptions, 0) << "the test should exercise preemption";
  // Only the local prefix cache still holds pages.
  EXPECT_EQ(s.kv_pages_in_use, s.prefix_cached_pages);
  EXPECT_EQ(s.running, 0);
}

TEST(EngineTest, CancelReturnsPagesAndEndsWithCancelled) {
  EngineOptions o;
  auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  ASSERT_TRUE(e.ok());
  std::promise<FinishReason> fin;
  std::promise<void> started;
  bool first = true;
  GenerationRequest r;
  r.id = "long";
  r.prompt = {1, 400, 401};
  r.max_new_tokens = 500;
  r.ignore_eos = true;
  ASSERT_TRUE((*e)->Submit(std::move(r),
                           [&](const GenerationEvent& ev) {
                             if (ev.token >= 0 && first) {
                               first = false;
                               started.set_value();
                             }
                             if (ev.finish != FinishReason::kNone)
                               fin.set_value(ev.finish);
                           })
                  .ok());
  started.get_future().wait();
  (*e)->Cancel("long");
  EXPECT_EQ(fin.get_future().get(), FinishReason::kCancelled);
  EngineStats s;
  for (int i = 0; i < 100; ++i) {
    s = (*e)->Stats();
    if (s.kv_pages_in_use == s.prefix_cached_pages) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(s.kv_pages_in_use, s.prefix_cached_pages);
  EXPECT_LT(s.tokens_generated, 500);
}

// Waits for the post-step stats snapshot to show `done` true.
template <typename F>
EngineStats WaitStats(Engine& e, F done) {
  EngineStats s;
  for (int i = 0; i < 400; ++i) {
    s = e.Stats();
    if (done(s)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return s;
}

TEST(EngineTest, LocalPrefixCacheSharesPagesWithoutChangingOutputs) {
  std::vector<int32_t> base = {1};
  for (int j = 0; j < 41; ++j) base.push_back(300 + (j * 13) % 200);
  std::vector<int32_t> p1 = base, p2 = base;
  for (int32_t t : {5, 6, 7}) p1.push_back(t);
  for (int32_t t : {9, 10, 11, 12, 13}) p2.push_back(t);
  // Run one after the other: p1, p2 (shares base), p1 again (shares p1's
  // prompt and more: the first run's generated tokens are cached too).
  const std::vector<std::vector<int32_t>> order = {p1, p2, p1};
  EngineOptions off;
  off.kv.page_size = 4;
  off.prefix_caching = false;
  auto ref = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), off);
  ASSERT_TRUE(ref.ok());
  EngineOptions on = off;
  on.prefix_caching = true;
  auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), on);
  ASSERT_TRUE(e.ok());
  for (const auto& p : order) {
    const Outcome want = RunAll(**ref, {p}, 20)[0];
    const Outcome got = RunAll(**e, {p}, 20)[0];
    ASSERT_TRUE(got.status.ok()) << got.status;
    EXPECT_EQ(got.tokens, want.tokens);
  }
  // Expected shared tokens, from the prompts alone: whole 4-token blocks of
  // the common prefix, leaving the last prompt token to run.
  auto shared = [](const std::vector<int32_t>& a,
                   const std::vector<int32_t>& b) {
    size_t n = 0;
    while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
    n = std::min(n, b.size() - 1);
    return static_cast<int64_t>(n / 4 * 4);
  };
  const int64_t want_hits = shared(p1, p2) + shared(p1, p1);
  const EngineStats s =
      WaitStats(**e, [](const EngineStats& s) { return s.running == 0; });
  EXPECT_EQ(s.prefix_hits, 2);
  EXPECT_EQ(s.prefix_hit_tokens, want_hits);
  EXPECT_EQ(s.prefix_lookup_tokens,
            static_cast<int64_t>(p1.size() * 2 + p2.size()));
  EXPECT_GT(s.prefix_cached_blocks, 0);
  EXPECT_EQ(s.kv_pages_in_use, s.prefix_cached_pages);
  // The router's view: the events since 0 list exactly the cached keys.
  const PrefixCacheUpdate u = (*e)->PrefixUpdates(0, false);
  EXPECT_FALSE(u.snapshot);
  EXPECT_EQ(u.first_seq, 1u);
  std::set<BlockKey> keys;
  for (const auto& ev : u.events) {
    for (BlockKey k : ev.keys) {
      if (ev.stored) {
        EXPECT_TRUE(keys.insert(k).second);
      } else {
        EXPECT_EQ(keys.erase(k), 1u);
      }
    }
  }
  EXPECT_EQ(static_cast<int64_t>(keys.size()), s.prefix_cached_blocks);
  const PrefixCacheUpdate snap = (*e)->PrefixUpdates(0, true);
  ASSERT_TRUE(snap.snapshot);
  EXPECT_EQ(std::set<BlockKey>(snap.events[0].keys.begin(),
                               snap.events[0].keys.end()),
            keys);
}

TEST(EngineTest, PrefixCacheGivesWayWhenMemoryRunsOut) {
  // Room for ~96 tokens; 12 distinct 40-token requests in turn fill the
  // cache many times over: cached blocks must be evicted, nothing fails.
  EngineOptions o;
  o.kv.page_size = 4;
  o.kv.max_bytes = 24 * 5440;
  auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  ASSERT_TRUE(e.ok());
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> p = {1};
    for (int j = 0; j < 30; ++j) p.push_back(259 + (i * 17 + j * 3) % 250);
    const Outcome got = RunAll(**e, {p}, 10)[0];
    ASSERT_TRUE(got.status.ok()) << got.status;
    EXPECT_EQ(got.tokens.size(), 10u);
  }
  const EngineStats s =
      WaitStats(**e, [](const EngineStats& s) { return s.running == 0; });
  EXPECT_GT(s.prefix_evicted_blocks, 0);
  EXPECT_EQ(s.preemptions, 0);
  EXPECT_LE(s.kv_pages_in_use, s.kv_pages_total);
  // Evictions reached the router as removed events.
  const PrefixCacheUpdate u = (*e)->PrefixUpdates(0, false);
  bool removed = false;
  for (const auto& ev : u.events) removed = removed || !ev.stored;
  EXPECT_TRUE(removed);
}

TEST(EngineTest, RejectsBadRequestsSynchronously) {
  EngineOptions o;
  o.scheduler.max_waiting = 1;
  auto e = Engine::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  ASSERT_TRUE(e.ok());
  auto sink = [](const GenerationEvent&) {};
  GenerationRequest empty;
  EXPECT_EQ((*e)->Submit(empty, sink).code(),
            absl::StatusCode::kInvalidArgument);
  GenerationRequest bad_token;
  bad_token.prompt = {1, 512};
  EXPECT_EQ((*e)->Submit(bad_token, sink).code(),
            absl::StatusCode::kInvalidArgument);
  GenerationRequest too_long;
  too_long.prompt.assign(512, 5);
  EXPECT_EQ((*e)->Submit(too_long, sink).code(),
            absl::StatusCode::kInvalidArgument);
  GenerationRequest bad_p;
  bad_p.prompt = {1, 5};
  bad_p.sampling.top_p = 0;
  EXPECT_EQ((*e)->Submit(bad_p, sink).code(),
            absl::StatusCode::kInvalidArgument);
  // What the coordinator refuses, a worker called directly refuses too
  // (common/generation_rules.h): generation past the context, a
  // non-finite temperature.
  GenerationRequest past_context;
  past_context.prompt.assign(500, 5);
  past_context.max_new_tokens = 13;  // 500 + 13 > 512
  EXPECT_EQ((*e)->Submit(past_context, sink).code(),
            absl::StatusCode::kInvalidArgument);
  GenerationRequest inf_t;
  inf_t.prompt = {1, 5};
  inf_t.sampling.temperature = std::numeric_limits<float>::infinity();
  EXPECT_EQ((*e)->Submit(inf_t, sink).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::worker
