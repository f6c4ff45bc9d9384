// EngineCore driven step by step on stories260K: no thread, no sleeps; each
// test states what every step must have produced.
#include "worker/engine/engine_core.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/stories260k_for_tests.h"

namespace latentkv::worker {
namespace {

struct Log {
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  absl::Status status;
  bool done = false;
};

EventSink Record(Log* log) {
  return [log](const GenerationEvent& ev) {
    if (ev.token >= 0) log->tokens.push_back(ev.token);
    if (ev.finish != FinishReason::kNone || !ev.status.ok()) {
      log->finish = ev.finish;
      log->status = ev.status;
      log->done = true;
    }
  };
}

GenerationRequest Request(const std::string& id, int prompt_len, int max_new) {
  GenerationRequest r;
  r.id = id;
  r.prompt = {1};
  for (int j = 1; j < prompt_len; ++j) r.prompt.push_back(259 + j * 7 % 250);
  r.max_new_tokens = max_new;
  r.ignore_eos = true;
  return r;
}

std::unique_ptr<EngineCore> Core(int32_t max_step_tokens) {
  EngineOptions o;
  o.kv.page_size = 4;
  o.scheduler.max_step_tokens = max_step_tokens;
  o.prefix_caching = false;
  auto core = EngineCore::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  EXPECT_TRUE(core.ok()) << core.status();
  return std::move(*core);
}

void Admit(EngineCore& core, GenerationRequest r, Log* log) {
  auto seq = core.Prepare(std::move(r));
  ASSERT_TRUE(seq.ok()) << seq.status();
  core.Admit(std::move(*seq), Record(log));
}

// Chunked prefill under a token budget: a 21-token prompt with 8 tokens per
// step needs 3 steps before its first token, then one token per step.
TEST(EngineCoreTest, EveryStepDoesWhatTheBudgetAllows) {
  auto core = Core(/*max_step_tokens=*/8);
  Log a;
  Admit(*core, Request("a", 21, 4), &a);
  const std::vector<size_t> tokens_after_step = {0, 0, 1, 2, 3, 4};
  for (size_t s = 0; s < tokens_after_step.size(); ++s) {
    core->Step();
    EXPECT_EQ(a.tokens.size(), tokens_after_step[s]) << "after step " << s + 1;
  }
  EXPECT_TRUE(a.done);
  EXPECT_EQ(a.finish, FinishReason::kLength);
  EXPECT_TRUE(core->idle());
  const EngineStats s = core->Stats();
  EXPECT_EQ(s.kv_pages_in_use, 0);  // no prefix cache: everything returned
  EXPECT_EQ(s.steps, 6);
  EXPECT_EQ(s.tokens_generated, 4);
}

// Two requests in one batch give the tokens each gives alone; a cancel
// between steps ends one at once and returns its pages.
TEST(EngineCoreTest, BatchEqualsAloneAndCancelIsImmediate) {
  Log alone_a, alone_b;
  {
    auto core = Core(512);
    Admit(*core, Request("a", 9, 6), &alone_a);
    while (!core->idle()) core->Step();
    Admit(*core, Request("b", 14, 6), &alone_b);
    while (!core->idle()) core->Step();
  }
  auto core = Core(512);
  Log a, b, c;
  Admit(*core, Request("a", 9, 6), &a);
  Admit(*core, Request("b", 14, 6), &b);
  Admit(*core, Request("c", 30, 50), &c);
  core->Step();  // every prompt in, a first token each
  EXPECT_EQ(a.tokens.size(), 1u);
  EXPECT_EQ(c.tokens.size(), 1u);
  const int64_t pages_with_c = core->Stats().kv_pages_in_use;
  core->Cancel("c");
  EXPECT_TRUE(c.done);
  EXPECT_EQ(c.finish, FinishReason::kCancelled);
  EXPECT_LT(core->Stats().kv_pages_in_use, pages_with_c);
  core->Cancel("nobody");  // no-op
  while (!core->idle()) core->Step();
  EXPECT_EQ(a.tokens, alone_a.tokens);
  EXPECT_EQ(b.tokens, alone_b.tokens);
  EXPECT_EQ(core->Stats().kv_pages_in_use, 0);
}

TEST(EngineCoreTest, DuplicateIdsAndBadRequests) {
  auto core = Core(512);
  Log a, dup;
  Admit(*core, Request("a", 5, 3), &a);
  Admit(*core, Request("a", 5, 3), &dup);
  EXPECT_TRUE(dup.done);
  EXPECT_EQ(dup.status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(a.done);
  GenerationRequest compressed = Request("x", 5, 3);
  compressed.kv_mode = KvMode::kCompressed;  // no plan on this server
  EXPECT_EQ(core->Prepare(compressed).status().code(),
            absl::StatusCode::kInvalidArgument);
  GenerationRequest huge = Request("y", 5, 500);  // 505 <= 512 but no memory
  EngineOptions tiny;
  tiny.kv.page_size = 4;
  tiny.kv.max_bytes = 16 * 5440;
  auto small =
      EngineCore::Create(Stories260k(), kernels::MakeCpuBackend(), tiny);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ((*small)->Prepare(huge).status().code(),
            absl::StatusCode::kInvalidArgument);
  // What fits alone: the largest n whose pages (ceil(n / 4) per layer and
  // KV head) fit the memory, and n + 1 does not.
  const int64_t most = (*small)->max_sequence_tokens();
  EXPECT_GT(most, 0);
  EXPECT_LT(most, 505);
  EXPECT_TRUE((*small)->Prepare(Request("fits", 5, most - 5)).ok());
  EXPECT_EQ((*small)->Prepare(Request("over", 5, most - 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core->max_sequence_tokens(), 512);  // the model's context
  core->FailAll(absl::UnavailableError("test"));
  EXPECT_TRUE(a.done);
  EXPECT_EQ(a.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(core->Stats().kv_pages_in_use, 0);
}

}  // namespace
}  // namespace latentkv::worker

namespace latentkv::worker {
namespace {

// Each request has exactly one way for its prompt's KV to arrive, and an
// arrival that does not fit falls back without holding anything.
TEST(KvArrivalTest, EachRequestHasOneWayAndBadRowsFallBack) {
  auto cache = *KvCache::Create({{.n_kv_heads = 1, .d_qk = 2, .d_vo = 2}},
                                {.page_size = 2, .max_bytes = 1 << 16});
  auto backend = kernels::MakeCpuBackend();
  auto pools = *KvPools::Create(backend.get(), *cache);
  PrefixIndex index(cache.get());
  auto prefill = MakePrefillArrival(cache.get(), pools.get());
  auto store = MakeKvStoreArrival(cache.get(), pools.get());
  auto local = MakeLocalPrefixArrival(cache.get(), &index);
  auto no_cache = MakeLocalPrefixArrival(cache.get(), nullptr);
  Sequence transferred, stored, plain;
  for (Sequence* s : {&transferred, &stored, &plain}) {
    s->kv.Init(*cache);
    s->tokens = {1, 2, 3, 4, 5};
    s->prompt_len = 5;
  }
  auto bad = std::make_shared<KvSnapshot>();
  bad->shapes = {{1, 4, 4}};  // not this cache's dims
  bad->rows = {{""}};
  transferred.import_kv = bad;
  transferred.import_first_token = 7;
  stored.import_kv = bad;
  stored.import_first_token = -1;
  for (const auto& [seq, want] : std::vector<std::pair<Sequence*, KvArrival*>>{
           {&transferred, prefill.get()},
           {&stored, store.get()},
           {&plain, local.get()}}) {
    int ways = 0;
    for (KvArrival* a : {prefill.get(), store.get(), local.get()}) {
      if (a->Applies(*seq)) {
        ++ways;
        EXPECT_EQ(a, want) << a->name();
      }
    }
    EXPECT_EQ(ways, 1);
  }
  EXPECT_FALSE(no_cache->Applies(plain));
  EXPECT_FALSE(prefill->Attach(&transferred));
  EXPECT_FALSE(store->Attach(&stored));
  EXPECT_EQ(prefill->failed(), 1);
  EXPECT_EQ(store->failed(), 1);
  EXPECT_EQ(transferred.tokens.size(), 5u);  // no first token appended
  EXPECT_EQ(transferred.num_cached, 0);
  EXPECT_EQ(cache->pages_in_use(), 0);
  // Nothing cached locally: no arrival, and not a failure.
  EXPECT_FALSE(local->Attach(&plain));
  EXPECT_EQ(local->failed(), 0);
  EXPECT_EQ(local->looked_up(), 5);
}

}  // namespace
}  // namespace latentkv::worker
