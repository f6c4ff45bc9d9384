// Embeddings (GenerationRequest::embed) against the float64 reference
// forward: the mean over the prompt's positions of the final RMS-normed
// hidden state, computed in chunks, beside a generating request, and again
// when the prompt's prefix is cached (an embedding never shares it).
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/engine_core.h"
#include "worker/engine/reference_forward_for_tests.h"
#include "worker/engine/stories260k_for_tests.h"

namespace latentkv::worker {
namespace {

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378, 267, 330, 300, 9};

std::vector<double> ReferenceMean(const std::vector<int32_t>& prompt) {
  const int H = Stories260k()->config.hidden_size;
  const std::vector<double> h = ReferenceFinalHidden(*Stories260k(), prompt);
  std::vector<double> mean(H, 0.0);
  for (size_t r = 0; r < prompt.size(); ++r) {
    for (int i = 0; i < H; ++i) mean[i] += h[r * H + i] / prompt.size();
  }
  return mean;
}

std::unique_ptr<EngineCore> Core(bool prefix_caching) {
  EngineOptions o;
  o.kv.page_size = 4;
  o.scheduler.max_step_tokens = 3;  // the prompt runs in chunks
  o.prefix_caching = prefix_caching;
  auto core = EngineCore::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  EXPECT_TRUE(core.ok()) << core.status();
  return std::move(*core);
}

struct Outcome {
  std::vector<float> embedding;
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  absl::Status status;
};

void Submit(EngineCore& core, GenerationRequest r, Outcome* out) {
  auto seq = core.Prepare(std::move(r));
  ASSERT_TRUE(seq.ok()) << seq.status();
  core.Admit(std::move(*seq), [out](const GenerationEvent& ev) {
    if (ev.token >= 0) out->tokens.push_back(ev.token);
    if (!ev.embedding.empty()) out->embedding = ev.embedding;
    if (ev.finish != FinishReason::kNone || !ev.status.ok()) {
      out->finish = ev.finish;
      out->status = ev.status;
    }
  });
}

GenerationRequest EmbedRequest(const std::string& id) {
  GenerationRequest r;
  r.id = id;
  r.prompt = kPrompt;
  r.max_new_tokens = 1;
  r.embed = true;
  return r;
}

void ExpectReference(const Outcome& o) {
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.finish, FinishReason::kStop);
  EXPECT_TRUE(o.tokens.empty());
  const std::vector<double> ref = ReferenceMean(kPrompt);
  ASSERT_EQ(o.embedding.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_NEAR(o.embedding[i], ref[i], 1e-4 + 1e-4 * std::abs(ref[i])) << i;
  }
}

TEST(EmbeddingTest, MeanOfFinalHiddenStatesInChunks) {
  auto core = Core(/*prefix_caching=*/false);
  Outcome o;
  Submit(*core, EmbedRequest("e"), &o);
  for (int i = 0; i < 20 && o.finish == FinishReason::kNone; ++i) {
    core->Step();
  }
  ExpectReference(o);
  EXPECT_EQ(core->Stats().tokens_generated, 0);
}

TEST(EmbeddingTest, BesideGenerationAndWithThePrefixCached) {
  auto core = Core(/*prefix_caching=*/true);
  // A generation over the same prompt first: its prefix gets cached.
  GenerationRequest g;
  g.id = "g";
  g.prompt = kPrompt;
  g.max_new_tokens = 6;
  g.ignore_eos = true;
  Outcome gen, first, second;
  Submit(*core, g, &gen);
  Submit(*core, EmbedRequest("e1"), &first);
  for (int i = 0; i < 40 && (gen.finish == FinishReason::kNone ||
                             first.finish == FinishReason::kNone);
       ++i) {
    core->Step();
  }
  EXPECT_EQ(gen.tokens.size(), 6u);
  ExpectReference(first);
  EXPECT_GT(core->Stats().prefix_cached_blocks, 0);
  Submit(*core, EmbedRequest("e2"), &second);
  for (int i = 0; i < 20 && second.finish == FinishReason::kNone; ++i) {
    core->Step();
  }
  ExpectReference(second);
}

TEST(EmbeddingTest, RefusesGenerationOnlyOptions) {
  auto core = Core(false);
  GenerationRequest r = EmbedRequest("bad");
  r.sampling.logprobs = 1;
  r.sampling.prompt_logprobs = true;
  EXPECT_EQ(core->Prepare(std::move(r)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::worker
