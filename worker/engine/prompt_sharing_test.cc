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

TEST(PromptSharingTest, ACommonPrefixIsShared) {
  // Two prompts with the same first 24 tokens, then different.
  std::vector<int32_t> a = Prompt(24), b = Prompt(24);
  for (int i = 0; i < 10; ++i) {
    a.push_back(300 + i);
    b.push_back(400 + i);
  }
  auto core = Core();
  Outcome out;
  Admit(*core, "a", a, &out);
  Admit(*core, "b", b, &out);
  RunUntil(*core, out, 2);
  EXPECT_EQ(core->Stats().prefix_hit_tokens, 24);
  // A short common header before long different tails: no waiting (each
  // computes it rather than wait for the other's whole prompt).
  {
    std::vector<int32_t> x = Prompt(8), y = Prompt(8);
    for (int i = 0; i < 40; ++i) {
      x.push_back(300 + i);
      y.push_back(100 + i);
    }
    auto core3 = Core();
    Outcome out3;
    Admit(*core3, "x", x, &out3);
    Admit(*core3, "y", y, &out3);
    core3->Step();
    EXPECT_EQ(core3->Stats().running, 2);
    RunUntil(*core3, out3, 2);
  }
  // Unrelated prompts do not wait for each other.
  auto core2 = Core();
  Outcome out2;
  Admit(*core2, "x", Prompt(30, 1), &out2);
  Admit(*core2, "y", Prompt(30, 2), &out2);
  core2->Step();
  EXPECT_EQ(core2->Stats().running, 2);
  RunUntil(*core2, out2, 2);
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
