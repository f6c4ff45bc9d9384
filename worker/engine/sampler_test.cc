#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <set>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

using Scratch = std::vector<std::pair<float, int32_t>>;

int32_t Sample(const std::vector<float>& logits, const SamplingOptions& o,
               SamplerRng& rng) {
  Scratch scratch;
  return SampleToken(logits.data(), static_cast<int32_t>(logits.size()), o, rng,
                     &scratch);
}

std::vector<float> RandomLogits(int32_t vocab, uint64_t seed,
                                float stddev = 3.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> logits(vocab);
  for (float& l : logits) l = normal(rng);
  return logits;
}

// softmax(logits / t) in double.
std::vector<double> Softmax(const std::vector<float>& logits, double t) {
  const double m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp((logits[i] - m) / t);
    sum += p[i];
  }
  for (double& x : p) x /= sum;
  return p;
}

struct GreedyCase {
  std::vector<float> logits;
  int32_t expected;
};

class GreedyTest : public ::testing::TestWithParam<GreedyCase> {};

TEST_P(GreedyTest, TemperatureZeroIsArgmaxLowestIdOnTies) {
  SamplerRng rng(1);
  const SamplerRng untouched = rng;
  EXPECT_EQ(Sample(GetParam().logits, {.temperature = 0.0f}, rng),
            GetParam().expected);
  EXPECT_EQ(rng, untouched);  // greedy draws no random numbers
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GreedyTest,
    ::testing::Values(GreedyCase{{0.5f}, 0}, GreedyCase{{1, 3, 2}, 1},
                      GreedyCase{{5, 1, 5, 5}, 0}, GreedyCase{{-1, 7, 7}, 1},
                      GreedyCase{{-INFINITY, -INFINITY, -3}, 2},
                      GreedyCase{{NAN, 2, NAN, 4}, 3}));

TEST(SamplerTest, GreedyOnLargeVocab) {
  const std::vector<float> logits = RandomLogits(32000, 5);
  const int32_t argmax = static_cast<int32_t>(
      std::max_element(logits.begin(), logits.end()) - logits.begin());
  SamplerRng rng(0);
  EXPECT_EQ(Sample(logits, {}, rng), argmax);
}

TEST(SamplerTest, TopKOneIsGreedyAtAnyTemperature) {
  const std::vector<float> logits = RandomLogits(32000, 6);
  const int32_t argmax = static_cast<int32_t>(
      std::max_element(logits.begin(), logits.end()) - logits.begin());
  SamplerRng rng(3);
  Scratch scratch;
  for (float t : {0.1f, 0.7f, 1.0f, 5.0f, 100.0f}) {
    for (int i = 0; i < 50; ++i) {
      EXPECT_EQ(SampleToken(logits.data(), 32000,
                            {.temperature = t, .top_k = 1}, rng, &scratch),
                argmax);
    }
  }
}

TEST(SamplerTest, TopKOneTiesPickLowestId) {
  const std::vector<float> logits = {1, 4, 2, 4, 4};
  SamplerRng rng(3);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(Sample(logits, {.temperature = 1.0f, .top_k = 1}, rng), 1);
  }
}

std::vector<int32_t> Draws(const std::vector<float>& logits,
                           const SamplingOptions& o, int n) {
  SamplerRng rng(o.seed);
  Scratch scratch;
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(SampleToken(
        logits.data(), static_cast<int32_t>(logits.size()), o, rng, &scratch));
  }
  return out;
}

TEST(SamplerTest, SameSeedSameDrawsDifferentSeedDifferent) {
  const std::vector<float> logits = RandomLogits(1000, 9);
  for (const SamplingOptions& base :
       {SamplingOptions{.temperature = 1.5f},
        SamplingOptions{.temperature = 1.5f, .top_k = 50},
        SamplingOptions{.temperature = 1.5f, .top_p = 0.9f},
        SamplingOptions{.temperature = 1.5f, .top_p = 0.9f, .top_k = 100}}) {
    SamplingOptions a = base, b = base;
    a.seed = 11;
    b.seed = 12;
    const std::vector<int32_t> da = Draws(logits, a, 200);
    EXPECT_EQ(da, Draws(logits, a, 200));
    EXPECT_NE(da, Draws(logits, b, 200));
  }
}

TEST(SamplerTest, FrequenciesMatchTemperedSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f};
  const double t = 0.7;
  const std::vector<double> p = Softmax(logits, t);
  constexpr int kDraws = 200000;
  std::vector<int> counts(logits.size(), 0);
  SamplerRng rng(2024);
  Scratch scratch;
  for (int i = 0; i < kDraws; ++i) {
    ++counts[SampleToken(logits.data(), 6, {.temperature = 0.7f}, rng,
                         &scratch)];
  }
  double chi2 = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double expected = p[i] * kDraws;
    const double sigma = std::sqrt(kDraws * p[i] * (1 - p[i]));
    EXPECT_NEAR(counts[i], expected, 4 * sigma) << "token " << i;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  // 5 degrees of freedom: P(chi2 > 25.7) ~ 1e-4.
  EXPECT_LT(chi2, 25.7);
}

TEST(SamplerTest, TopPNeverLeavesTheNucleus) {
  const std::vector<float> logits = RandomLogits(500, 21, 1.0f);
  const double t = 0.8;
  // Nucleus computed independently: smallest prefix of sorted probabilities
  // whose mass reaches 0.5.
  const std::vector<double> p = Softmax(logits, t);
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  std::set<int32_t> nucleus;
  double mass = 0;
  for (int32_t id : order) {
    nucleus.insert(id);
    mass += p[id];
    if (mass >= 0.5) break;
  }
  ASSERT_GT(nucleus.size(), 1u);  // the test is meaningful
  std::set<int32_t> seen;
  for (int32_t id :
       Draws(logits, {.temperature = 0.8f, .top_p = 0.5f, .seed = 4}, 20000)) {
    EXPECT_TRUE(nucleus.count(id)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen, nucleus);  // every nucleus token is reachable
}

TEST(SamplerTest, TopPTinyKeepsTopToken) {
  const std::vector<float> logits = RandomLogits(32000, 13);
  const int32_t argmax = static_cast<int32_t>(
      std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (int32_t id :
       Draws(logits, {.temperature = 1.0f, .top_p = 1e-6f, .seed = 1}, 100)) {
    EXPECT_EQ(id, argmax);
  }
}

TEST(SamplerTest, TopPLargeNucleusOnBigVocab) {
  // A nearly flat distribution needs most of the vocab: exercises the lazy
  // sort past its first chunks.
  std::vector<float> logits = RandomLogits(32000, 17);
  for (float& l : logits) l *= 0.01f;
  std::set<int32_t> seen;
  for (int32_t id :
       Draws(logits, {.temperature = 1.0f, .top_p = 0.95f, .seed = 3}, 2000)) {
    ASSERT_GE(id, 0);
    ASSERT_LT(id, 32000);
    seen.insert(id);
  }
  EXPECT_GT(seen.size(), 1500u);
}

// The kept set computed independently: sort by logit (ties by id), keep
// top_k, renormalise, keep the smallest prefix whose mass reaches top_p.
std::set<int32_t> ReferenceKept(const std::vector<float>& logits,
                                const SamplingOptions& o) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (o.top_k > 0 && o.top_k < static_cast<int32_t>(order.size())) {
    order.resize(o.top_k);
  }
  std::vector<float> kept_logits;
  for (int32_t id : order) kept_logits.push_back(logits[id]);
  const std::vector<double> p = Softmax(kept_logits, o.temperature);
  std::set<int32_t> kept;
  double mass = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    kept.insert(order[i]);
    mass += p[i];
    if (o.top_p < 1.0f && mass >= o.top_p) break;
  }
  return kept;
}

TEST(SamplerTest, RandomOptionsStayWithinReferenceSet) {
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 200; ++trial) {
    SCOPED_TRACE(trial);
    const int32_t vocab = std::uniform_int_distribution<int32_t>(1, 3000)(rng);
    const std::vector<float> logits = RandomLogits(
        vocab, rng(), std::uniform_real_distribution<float>(0.01f, 4.0f)(rng));
    SamplingOptions o;
    o.temperature = std::uniform_real_distribution<float>(0.2f, 2.0f)(rng);
    o.top_p = std::uniform_int_distribution<int>(0, 1)(rng)
                  ? 1.0f
                  : std::uniform_real_distribution<float>(0.05f, 0.99f)(rng);
    const int32_t top_ks[] = {0, 1, 2, 40, 600};  // 600: nth_element path
    o.top_k = top_ks[std::uniform_int_distribution<int>(0, 4)(rng)];
    o.seed = rng();
    const std::set<int32_t> kept = ReferenceKept(logits, o);
    for (int32_t id : Draws(logits, o, 200)) {
      ASSERT_TRUE(kept.count(id))
          << "token " << id << " vocab " << vocab << " T " << o.temperature
          << " top_p " << o.top_p << " top_k " << o.top_k;
    }
  }
}

TEST(SamplerTest, TopKTwoOnlyReturnsTopTwo) {
  const std::vector<float> logits = {0.3f, 2.0f, 1.9f, 1.8f, -4.0f, 1.95f};
  std::set<int32_t> seen;
  for (int32_t id :
       Draws(logits, {.temperature = 5.0f, .top_k = 2, .seed = 8}, 5000)) {
    seen.insert(id);
  }
  EXPECT_EQ(seen, (std::set<int32_t>{1, 5}));
}

TEST(SamplerTest, TopKThenTopPRenormalisesWithinTopK) {
  // Tempered probabilities of the top 3 (renormalised): ~0.665, 0.245, 0.090.
  // top_p 0.8 of the top-3 distribution needs two tokens; token 3 never.
  const std::vector<float> logits = {2.0f, 1.0f, 0.0f, -0.5f};
  std::set<int32_t> seen;
  for (int32_t id : Draws(
           logits, {.temperature = 1.0f, .top_p = 0.8f, .top_k = 3, .seed = 5},
           5000)) {
    seen.insert(id);
  }
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
}

TEST(SamplerTest, MaskedLogitsAreNeverSampled) {
  std::vector<float> logits(100, -INFINITY);
  logits[17] = 0.0f;
  logits[42] = 0.1f;
  logits[3] = NAN;
  std::set<int32_t> seen;
  for (int32_t id : Draws(logits, {.temperature = 1.0f, .seed = 2}, 2000)) {
    seen.insert(id);
  }
  EXPECT_EQ(seen, (std::set<int32_t>{17, 42}));
  std::vector<float> all_masked(10, -INFINITY);
  SamplerRng rng(0);
  EXPECT_EQ(Sample(all_masked, {.temperature = 1.0f}, rng), 0);
}

// The logit controls against a float64 reference written from the rules
// (common/generation_rules.h), over random logits and token histories with
// repeats.
TEST(LogitControlsTest, MatchAFloat64Reference) {
  constexpr int32_t kVocab = 64;
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const std::vector<float> logits = RandomLogits(kVocab, trial);
    std::uniform_int_distribution<int32_t> tok(0, 15);  // repeats likely
    std::vector<int32_t> prompt(1 + trial % 7), generated(trial % 11);
    for (auto& t : prompt) t = tok(rng);
    for (auto& t : generated) t = tok(rng);
    LogitControls c;
    c.repetition_penalty = 0.5f + 0.1f * (trial % 10);
    c.frequency_penalty = -1.0f + 0.3f * (trial % 7);
    c.presence_penalty = 0.7f - 0.2f * (trial % 5);
    c.logit_bias = {{3, 5.0f}, {40, -100.0f}, {trial % kVocab, 0.25f}};
    std::vector<double> want(logits.begin(), logits.end());
    std::set<int32_t> seen(prompt.begin(), prompt.end());
    seen.insert(generated.begin(), generated.end());
    for (int32_t t : seen) {
      want[t] = want[t] > 0 ? want[t] / c.repetition_penalty
                            : want[t] * c.repetition_penalty;
    }
    for (int32_t t = 0; t < kVocab; ++t) {
      const auto n = std::count(generated.begin(), generated.end(), t);
      if (n > 0) want[t] -= c.frequency_penalty * n + c.presence_penalty;
    }
    for (const auto& [t, b] : c.logit_bias) want[t] += b;
    std::vector<float> got = logits;
    ApplyLogitControls(got.data(), kVocab, c, prompt, generated);
    for (int32_t t = 0; t < kVocab; ++t) {
      EXPECT_NEAR(got[t], want[t], 1e-5 * (1 + std::abs(want[t])))
          << "trial " << trial << " token " << t;
    }
  }
  // Defaults change nothing.
  const std::vector<float> logits = RandomLogits(kVocab, 99);
  std::vector<float> same = logits;
  ApplyLogitControls(same.data(), kVocab, LogitControls(), {1, 2, 2}, {2, 3});
  EXPECT_EQ(same, logits);
}

TEST(LogitControlsTest, PenaltiesAndBiasesSteerGreedyChoices) {
  // Token 5 leads token 2 by 1.0.
  std::vector<float> logits(8, 0.0f);
  logits[5] = 3.0f;
  logits[2] = 2.0f;
  SamplingOptions greedy;
  SamplerRng rng(1);
  EXPECT_EQ(Sample(logits, greedy, rng), 5);
  // Generated once already: a presence penalty over the lead hands it over.
  std::vector<float> l = logits;
  greedy.controls.presence_penalty = 1.5f;
  ApplyLogitControls(l.data(), 8, greedy.controls, {0}, {5});
  EXPECT_EQ(Sample(l, greedy, rng), 2);
  // A bias of -100 removes a token in practice; +100 forces one.
  l = logits;
  greedy.controls = LogitControls();
  greedy.controls.logit_bias = {{5, -100.0f}, {7, 100.0f}};
  ApplyLogitControls(l.data(), 8, greedy.controls, {0}, {});
  EXPECT_EQ(Sample(l, greedy, rng), 7);
}

TEST(LogitControlsTest, MinPDropsTokensUnderItsShareOfTheTop) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1; min_p 0.4 keeps
  // those >= 0.2: tokens 0 and 1, renormalised to 0.625 / 0.375.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f),
                                     std::log(0.15f), std::log(0.05f)};
  SamplingOptions o;
  o.temperature = 1.0f;
  o.controls.min_p = 0.4f;
  SamplerRng rng(3);
  int counts[4] = {0, 0, 0, 0};
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) ++counts[Sample(logits, o, rng)];
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_NEAR(counts[0] / double{kDraws}, 0.625, 0.015);
  // min_p 1 keeps only the most likely token.
  o.controls.min_p = 1.0f;
  for (int i = 0; i < 100; ++i) EXPECT_EQ(Sample(logits, o, rng), 0);
}

}  // namespace
}  // namespace latentkv::worker
