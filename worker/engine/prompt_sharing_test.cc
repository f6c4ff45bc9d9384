// Prompt sharing (prompt_sharing.h) in the engine: requests that arrive
// together with a common prompt compute its blocks once (the local prefix
// cache's hit counters say how many tokens were shared), give exactly the
// tokens they give alone (greedy), and a waiting request can be cancelled,
// or released when its leader is cancelled.
#include "worker/engine/prompt_sharing.h"

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/engine_core.h"
#include "worker/engine/stories260k_for_tests.h"

namespace latentkv::worker {
namespace {

std::vector<int32_t> Prompt(int n, int salt = 0) {
  std::vector<int32_t> p = {1};
  for (int i = 1; i < n; ++i) p.push_back(259 + (i * 7 + salt) % 250);
  return p;
}

struct Outcome {
  std::map<std::string, std::vector<int32_t>> tokens;
  std::map<std::string, FinishReason> finish;
};

std::unique_ptr<EngineCore> Core() {
  EngineOptions o;
  o.kv.page_size = 4;
  auto core = EngineCore::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  EXPECT_TRUE(core.ok()) << core.status();
  return std::move(*core);
}

void Admit(EngineCore& core, const std::string& id,
           const std::vector<int32_t>& prompt, Outcome* out, int max_new = 6) {
  GenerationRequest r;
  r.id = id;
  r.prompt = prompt;
  r.max_new_tokens = max_new;
  r.ignore_eos = true;
  auto seq = core.Prepare(std::move(r));
  ASSERT_TRUE(seq.ok()) << seq.status();
  core.Admit(std::move(*seq), [out, id](const GenerationEvent& ev) {
    if (ev.token >= 0) out->tokens[id].push_back(ev.token);
    if (ev.finish != FinishReason::kNone) out->finish[id] = ev.finish;
    EXPECT_TRUE(ev.status.ok()) << ev.status;
  });
}

void RunUntil(EngineCore& core, const Outcome& out, size_t n) {
  for (int i = 0; i < 10000 && out.finish.size() < n; ++i) core.Step();
  ASSERT_EQ(out.finish.size(), n);
}

TEST(PromptSharingTest, SamplesOfOnePromptComputeItOnce) {
  const std::vector<int32_t> prompt = Prompt(41);  // 10 whole blocks + 1
  Outcome alone;
  {
    auto core = Core();
    Admit(*core, "alone", prompt, &alone);
    RunUntil(*core, alone, 1);
  }
  auto core = Core();
  Outcome out;
  for (int i = 0; i < 4; ++i)
    Admit(*core, "s" + std::to_string(i), prompt, &out);
  EXPECT_EQ(core->Stats().waiting + core->Stats().running, 4);
  RunUntil(*core, out, 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(out.tokens["s" + std::to_string(i)], alone.tokens["alone"]) << i;
  }
  // Three followers each shared the 40 tokens of whole blocks.
  const EngineStats s = core->Stats();
  EXPECT_EQ(s.prefix_hit_tokens, 3 * 40);
  EXPECT_EQ(s.prefix_hits, 3);
}

// Prompt(head) followed by `tail` tokens counting up from `base`.
std::vector<int32_t> HeadThenTail(int head, int tail, int32_t base) {
  std::vector<int32_t> p = Prompt(head);
  for (int i = 0; i < tail; ++i) p.push_back(base + i);
  return p;
}

// Admitted together, `x` and `y` both run from the first step: neither
// waits for the other.
void ExpectNeitherWaits(const std::vector<int32_t>& x,
                        const std::vector<int32_t>& y) {
  auto core = Core();
  Outcome out;
  Admit(*core, "x", x, &out);
  Admit(*core, "y", y, &out);
  core->Step();
  EXPECT_EQ(core->Stats().running, 2);
  RunUntil(*core, out, 2);
}

TEST(PromptSharingTest, ACommonPrefixIsShared) {
  // Two prompts with the same first 24 tokens, then different.
  auto core = Core();
  Outcome out;
  Admit(*core, "a", HeadThenTail(24, 10, 300), &out);
  Admit(*core, "b", HeadThenTail(24, 10, 400), &out);
  RunUntil(*core, out, 2);
  EXPECT_EQ(core->Stats().prefix_hit_tokens, 24);
  // A short common header before long different tails: each computes it
  // rather than wait for the other's whole prompt.
  ExpectNeitherWaits(HeadThenTail(8, 40, 300), HeadThenTail(8, 40, 100));
  // Unrelated prompts do not wait for each other.
  ExpectNeitherWaits(Prompt(30, 1), Prompt(30, 2));
}

TEST(PromptSharingTest, WaitingAndLeadingRequestsCanBeCancelled) {
  const std::vector<int32_t> prompt = Prompt(41);
  auto core = Core();
  Outcome out;
  Admit(*core, "lead", prompt, &out);
  Admit(*core, "f1", prompt, &out);
  Admit(*core, "f2", prompt, &out);
  core->Cancel("f1");  // waiting: gone at once
  EXPECT_EQ(out.finish["f1"], FinishReason::kCancelled);
  core->Cancel("lead");  // its follower is admitted and computes alone
  EXPECT_EQ(out.finish["lead"], FinishReason::kCancelled);
  RunUntil(*core, out, 3);
  EXPECT_EQ(out.finish["f2"], FinishReason::kLength);
  EXPECT_EQ(out.tokens["f2"].size(), 6u);
  EXPECT_EQ(core->Stats().waiting, 0);
}

}  // namespace
}  // namespace latentkv::worker
