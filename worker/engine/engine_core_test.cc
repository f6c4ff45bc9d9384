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
            absl::StatusCode::kResourceExhausted);
  core->FailAll(absl::UnavailableError("test"));
  EXPECT_TRUE(a.done);
  EXPECT_EQ(a.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(core->Stats().kv_pages_in_use, 0);
}

}  // namespace
}  // namespace latentkv::worker
