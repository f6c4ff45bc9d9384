// Log-probabilities the engine reports with each token, against the float64
// reference forward (reference_forward_for_tests.h): the log-softmax of the
// raw logits at every generated position, before temperature and the logit
// controls, and the most likely alternatives in order.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/engine_core.h"
#include "worker/engine/reference_forward_for_tests.h"
#include "worker/engine/stories260k_for_tests.h"

namespace latentkv::worker {
namespace {

struct Seen {
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;
  bool done = false;
};

Seen Generate(SamplingOptions sampling, int max_new) {
  EngineOptions o;
  o.kv.page_size = 4;
  o.prefix_caching = false;
  auto core = EngineCore::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  EXPECT_TRUE(core.ok()) << core.status();
  GenerationRequest r;
  r.id = "lp";
  r.prompt = {1, 403, 407, 261, 378};  // BOS "Once upon a time"
  r.max_new_tokens = max_new;
  r.ignore_eos = true;
  r.sampling = sampling;
  Seen seen;
  auto seq = (*core)->Prepare(std::move(r));
  EXPECT_TRUE(seq.ok()) << seq.status();
  const bool asked = sampling.logprobs >= 0;
  (*core)->Admit(std::move(*seq), [&seen, asked](const GenerationEvent& ev) {
    if (ev.token >= 0) {
      seen.tokens.push_back(ev.token);
      EXPECT_EQ(ev.logprobs.has_value(), asked);
      seen.logprobs.push_back(ev.logprobs.value_or(TokenLogprobs{}));
    }
    if (ev.finish != FinishReason::kNone) seen.done = true;
  });
  while (!seen.done) (*core)->Step();
  return seen;
}

// Float64 log-softmax of the reference logits at the position that
// predicted generated token i.
std::vector<std::vector<double>> ReferenceLogprobs(const Seen& seen) {
  std::vector<int32_t> seq = {1, 403, 407, 261, 378};
  seq.insert(seq.end(), seen.tokens.begin(), seen.tokens.end() - 1);
  const int32_t vocab = Stories260k()->config.vocab_size;
  const std::vector<double> logits = ReferenceLogits(*Stories260k(), seq);
  std::vector<std::vector<double>> out;
  for (size_t i = 0; i < seen.tokens.size(); ++i) {
    const double* row = logits.data() + (4 + i) * vocab;
    const double mx = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int32_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
    std::vector<double> lp(vocab);
    for (int32_t v = 0; v < vocab; ++v) lp[v] = row[v] - mx - std::log(sum);
    out.push_back(std::move(lp));
  }
  return out;
}

void ExpectMatchesReference(const Seen& seen, int top_n) {
  const auto ref = ReferenceLogprobs(seen);
  for (size_t i = 0; i < seen.tokens.size(); ++i) {
    const TokenLogprobs& got = seen.logprobs[i];
    EXPECT_NEAR(got.logprob, ref[i][seen.tokens[i]], 2e-3) << "token " << i;
    ASSERT_EQ(got.top.size(), static_cast<size_t>(top_n));
    std::vector<int32_t> order(ref[i].size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return ref[i][a] > ref[i][b];
    });
    for (int k = 0; k < top_n; ++k) {
      // Same value at each rank; the id too unless it ties its neighbour.
      EXPECT_NEAR(got.top[k].second, ref[i][order[k]], 2e-3) << i << "/" << k;
      if (k + 1 < top_n && ref[i][order[k]] - ref[i][order[k + 1]] > 1e-3 &&
          (k == 0 || ref[i][order[k - 1]] - ref[i][order[k]] > 1e-3)) {
        EXPECT_EQ(got.top[k].first, order[k]) << i << "/" << k;
      }
    }
  }
}

TEST(LogprobsTest, GreedyTokensAreTheMostLikelyAndMatchTheReference) {
  SamplingOptions s;
  s.logprobs = 5;
  const Seen seen = Generate(s, 8);
  ASSERT_EQ(seen.tokens.size(), 8u);
  ExpectMatchesReference(seen, 5);
  for (size_t i = 0; i < seen.tokens.size(); ++i) {
    EXPECT_EQ(seen.logprobs[i].top[0].first, seen.tokens[i]);
    EXPECT_FLOAT_EQ(seen.logprobs[i].top[0].second, seen.logprobs[i].logprob);
  }
  // Asking for log-probabilities does not change the tokens (the host
  // argmax then stands in for the backend's).
  EXPECT_EQ(Generate(SamplingOptions{}, 8).tokens, seen.tokens);
}

// Temperature and a repetition penalty change which token is drawn, not the
// reported log-probabilities: those are of the raw distribution.
TEST(LogprobsTest, SampledTokensReportTheRawDistribution) {
  SamplingOptions s;
  s.temperature = 1.5f;
  s.seed = 7;
  s.logprobs = 3;
  s.controls.repetition_penalty = 1.8f;
  s.controls.logit_bias = {{261, 5.0f}};
  const Seen seen = Generate(s, 10);
  ASSERT_EQ(seen.tokens.size(), 10u);
  ExpectMatchesReference(seen, 3);
  // logprobs = 0: the token's own only.
  s.logprobs = 0;
  const Seen own = Generate(s, 4);
  for (const TokenLogprobs& t : own.logprobs) EXPECT_TRUE(t.top.empty());
}

// The prompt's log-probabilities: each prompt token given those before it,
// computed in chunks (a budget of 3 tokens a step) and without sharing a
// cached prefix (a second identical request computes them again).
TEST(LogprobsTest, PromptLogprobsMatchTheReferenceInChunks) {
  EngineOptions o;
  o.kv.page_size = 4;
  o.scheduler.max_step_tokens = 3;
  o.prefix_caching = true;
  auto core = EngineCore::Create(Stories260k(), kernels::MakeCpuBackend(), o);
  ASSERT_TRUE(core.ok()) << core.status();
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 267, 330, 300};
  const std::vector<double> ref = ReferenceLogits(*Stories260k(), prompt);
  const int32_t vocab = Stories260k()->config.vocab_size;
  for (const char* id : {"first", "again"}) {
    GenerationRequest r;
    r.id = id;
    r.prompt = prompt;
    r.max_new_tokens = 2;
    r.ignore_eos = true;
    r.sampling.logprobs = 2;
    r.sampling.prompt_logprobs = true;
    std::vector<TokenLogprobs> got;
    int events_with_them = 0;
    bool done = false;
    auto seq = (*core)->Prepare(std::move(r));
    ASSERT_TRUE(seq.ok()) << seq.status();
    (*core)->Admit(std::move(*seq), [&](const GenerationEvent& ev) {
      if (!ev.prompt_logprobs.empty()) {
        got = ev.prompt_logprobs;
        ++events_with_them;
      }
      if (ev.finish != FinishReason::kNone) done = true;
    });
    while (!done) (*core)->Step();
    EXPECT_EQ(events_with_them, 1) << id;
    ASSERT_EQ(got.size(), prompt.size() - 1) << id;
    for (size_t i = 1; i < prompt.size(); ++i) {
      const double* row = ref.data() + (i - 1) * vocab;
      const double mx = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int32_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
      EXPECT_NEAR(got[i - 1].logprob, row[prompt[i]] - mx - std::log(sum), 2e-3)
          << id << " position " << i;
      EXPECT_EQ(got[i - 1].top.size(), 2u);
    }
  }
  // prompt_logprobs without logprobs is refused.
  GenerationRequest bad;
  bad.id = "bad";
  bad.prompt = prompt;
  bad.sampling.prompt_logprobs = true;
  EXPECT_TRUE(absl::IsInvalidArgument((*core)->Prepare(bad).status()));
}

TEST(LogprobsTest, ComputeLogprobsEdgeCases) {
  std::vector<std::pair<float, int32_t>> scratch;
  const float inf = INFINITY;
  // A ruled-out token (-inf) has -inf; ties among the top are by id.
  const std::vector<float> l = {1.0f, -inf, 1.0f, NAN, 0.0f};
  const TokenLogprobs t = ComputeLogprobs(l.data(), 5, 1, 3, &scratch);
  EXPECT_EQ(t.logprob, -inf);
  const double lse = std::log(2 * std::exp(1.0) + 1.0);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 0);
  EXPECT_EQ(t.top[1].first, 2);
  EXPECT_EQ(t.top[2].first, 4);
  EXPECT_NEAR(t.top[0].second, 1.0 - lse, 1e-6);
  EXPECT_NEAR(t.top[2].second, -lse, 1e-6);
  // More alternatives than the vocabulary: all of it.
  EXPECT_EQ(ComputeLogprobs(l.data(), 5, 0, 20, &scratch).top.size(), 5u);
}

}  // namespace
}  // namespace latentkv::worker
