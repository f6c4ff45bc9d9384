// The workload: a seed fixes prompts, lengths and arrival times; lengths stay
// in their ranges; Poisson and gamma arrivals have the asked mean rate (and
// the gamma shape's spread) within statistical tolerance; dataset prompts
// are BOS plus consecutive tokens of the real text.
#include "tools/bench/workload.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "gtest/gtest.h"

namespace latentkv::bench {
namespace {

PromptSource Synthetic() {
  PromptSource s;
  s.bos_id = 1;
  s.vocab_size = 512;
  return s;
}

std::vector<RequestSpec> Take(const WorkloadOptions& o, const PromptSource& s,
                              int n) {
  Workload w(o, &s);
  std::vector<RequestSpec> out;
  for (int i = 0; i < n; ++i) out.push_back(w.Next());
  return out;
}

bool Same(const std::vector<RequestSpec>& a,
          const std::vector<RequestSpec>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].prompt_token_ids != b[i].prompt_token_ids ||
        a[i].output_len != b[i].output_len || a[i].arrival_s != b[i].arrival_s)
      return false;
  }
  return true;
}

TEST(WorkloadTest, SeedFixesEverything) {
  const PromptSource s = Synthetic();
  WorkloadOptions o;
  o.input_len = 40;
  o.input_len_range = 0.5;
  o.output_len = 20;
  o.output_len_range = 0.5;
  o.request_rate = 5;
  o.burstiness = 0.7;
  o.seed = 42;
  const auto a = Take(o, s, 200);
  EXPECT_TRUE(Same(a, Take(o, s, 200)));
  o.seed = 43;
  EXPECT_FALSE(Same(a, Take(o, s, 200)));
  // Request i's prompt does not depend on the rate (only arrivals do).
  o.seed = 42;
  o.request_rate = 50;
  const auto c = Take(o, s, 200);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt_token_ids, c[i].prompt_token_ids);
    EXPECT_EQ(a[i].output_len, c[i].output_len);
  }
  EXPECT_NE(a[10].arrival_s, c[10].arrival_s);
}

TEST(WorkloadTest, LengthsStayInTheirRangesAndCoverThem) {
  const PromptSource s = Synthetic();
  WorkloadOptions o;
  o.input_len = 40;
  o.input_len_range = 0.25;  // [30, 50]
  o.output_len = 8;
  o.output_len_range = 0.5;  // [4, 12]
  std::set<int> in, out;
  for (const RequestSpec& r : Take(o, s, 2000)) {
    const int n = static_cast<int>(r.prompt_token_ids.size());
    EXPECT_GE(n, 30);
    EXPECT_LE(n, 50);
    EXPECT_GE(r.output_len, 4);
    EXPECT_LE(r.output_len, 12);
    EXPECT_EQ(r.prompt_token_ids[0], 1);  // BOS
    for (size_t i = 1; i < r.prompt_token_ids.size(); ++i) {
      EXPECT_GE(r.prompt_token_ids[i], 3);
      EXPECT_LT(r.prompt_token_ids[i], 512);
    }
    in.insert(n);
    out.insert(r.output_len);
    EXPECT_EQ(r.arrival_s, 0.0);  // rate inf: all at once
  }
  EXPECT_EQ(in.size(), 21u);
  EXPECT_EQ(out.size(), 9u);
  // No range: exact lengths.
  o.input_len_range = o.output_len_range = 0;
  for (const RequestSpec& r : Take(o, s, 50)) {
    EXPECT_EQ(r.prompt_token_ids.size(), 40u);
    EXPECT_EQ(r.output_len, 8);
  }
}

// Mean inter-arrival 1/rate; coefficient of variation 1/sqrt(shape).
TEST(ArrivalProcessTest, PoissonAndGammaMeanAndSpread) {
  constexpr int kN = 50000;
  const double rate = 8.0;
  for (double shape : {1.0, 0.25, 4.0}) {
    ArrivalProcess p(rate, shape, /*seed=*/shape * 100);
    double prev = p.Next();
    EXPECT_EQ(prev, 0.0);
    double sum = 0, sq = 0;
    for (int i = 0; i < kN; ++i) {
      const double t = p.Next();
      const double gap = t - prev;
      ASSERT_GE(gap, 0.0);
      sum += gap;
      sq += gap * gap;
      prev = t;
    }
    const double mean = sum / kN;
    const double var = sq / kN - mean * mean;
    // The sample mean's standard error is (1/rate)/sqrt(shape * n): 5 of them.
    const double se = (1 / rate) / std::sqrt(shape * kN);
    EXPECT_NEAR(mean, 1 / rate, 5 * se) << "shape " << shape;
    EXPECT_NEAR(std::sqrt(var) / mean, 1 / std::sqrt(shape),
                0.1 / std::sqrt(shape))
        << "shape " << shape;
  }
  ArrivalProcess all(kInf, 1.0, 1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(all.Next(), 0.0);
}

TEST(WorkloadTest, DatasetPromptsAreConsecutiveTextTokens) {
  // "Tokenizer": one id per word, 10 + word number within its passage.
  TokenizeFn tok = [](const std::string& text) {
    std::vector<int32_t> ids;
    int words = 0;
    bool in_word = false;
    for (char c : text) {
      if (c != ' ' && !in_word) ids.push_back(10 + words++);
      in_word = c != ' ';
    }
    return absl::StatusOr<std::vector<int32_t>>(ids);
  };
  absl::StatusOr<PromptSource> s = BuildPromptSource(
      {"a b c d e", "f g h", "i j k l m n o p"}, tok, 1000, 1, 512);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->pool.size(), 16u);
  EXPECT_EQ(s->starts, (std::vector<int64_t>{0, 5, 8}));
  WorkloadOptions o;
  o.input_len = 6;
  for (const RequestSpec& r : Take(o, *s, 30)) {
    ASSERT_EQ(r.prompt_token_ids.size(), 6u);
    EXPECT_EQ(r.prompt_token_ids[0], 1);
    // Starts at a passage start (id 10) and continues through the stream.
    EXPECT_EQ(r.prompt_token_ids[1], 10);
  }
  // Stops tokenizing once the pool is big enough.
  EXPECT_EQ(
      BuildPromptSource({"a b c d e", "f g h"}, tok, 3, 1, 512)->pool.size(),
      5u);
}

// Prefix groups: every prompt is one of G prefixes + its own suffix; the
// prompts of a group share exactly the prefix, groups differ in their first
// block, every group is used, and the seed fixes it all.
void CheckPrefixGroups(const PromptSource& s) {
  WorkloadOptions o;
  o.prefix_groups = 8;
  o.prefix_len = 40;
  o.input_len = 12;
  o.input_len_range = 0.5;  // suffixes of 6..18 tokens
  o.seed = 5;
  Workload w(o, &s);
  const auto& prefixes = w.prefixes();
  ASSERT_EQ(prefixes.size(), 8u);
  for (size_t g = 0; g < prefixes.size(); ++g) {
    ASSERT_EQ(prefixes[g].size(), 40u);
    EXPECT_EQ(prefixes[g][0], 1);  // BOS
    for (size_t h = 0; h < g; ++h) {
      EXPECT_FALSE(std::equal(prefixes[g].begin(),
                              prefixes[g].begin() + kPrefixDistinctTokens,
                              prefixes[h].begin()))
          << "groups " << h << " and " << g << " share their first block";
    }
  }
  const auto reqs = Take(o, s, 400);
  std::map<int, std::vector<const RequestSpec*>> by_group;
  for (const RequestSpec& r : reqs) {
    const int n = static_cast<int>(r.prompt_token_ids.size());
    EXPECT_GE(n, 40 + 6);
    EXPECT_LE(n, 40 + 18);
    int group = -1;
    for (size_t g = 0; g < prefixes.size(); ++g) {
      if (std::equal(prefixes[g].begin(), prefixes[g].end(),
                     r.prompt_token_ids.begin())) {
        group = static_cast<int>(g);
      }
    }
    ASSERT_GE(group, 0) << "request " << r.index << " has no group's prefix";
    by_group[group].push_back(&r);
  }
  EXPECT_EQ(by_group.size(), 8u);  // ~50 requests each
  // Within a group the suffixes are the requests' own: most pairs diverge
  // right after the prefix.
  for (const auto& [g, rs] : by_group) {
    int same_next = 0;
    for (size_t i = 1; i < rs.size(); ++i) {
      same_next += rs[i]->prompt_token_ids[40] == rs[0]->prompt_token_ids[40];
    }
    EXPECT_LT(same_next, static_cast<int>(rs.size()) / 4) << "group " << g;
  }
  EXPECT_TRUE(Same(reqs, Take(o, s, 400)));
  o.seed = 6;
  Workload other(o, &s);
  EXPECT_NE(other.prefixes()[0], prefixes[0]);
}

TEST(WorkloadTest, PrefixGroupsShareExactlyTheirPrefixSynthetic) {
  CheckPrefixGroups(Synthetic());
}

TEST(WorkloadTest, PrefixGroupsShareExactlyTheirPrefixFromText) {
  // A repetitive "text": 600 tokens cycling through 50 ids, so random
  // starts often share their first tokens and must be redrawn.
  PromptSource s = Synthetic();
  for (int i = 0; i < 600; ++i) s.pool.push_back(3 + i % 50);
  s.starts = {0, 100, 200};
  CheckPrefixGroups(s);
}

TEST(WorkloadTest, ValidationRejectsWhatCannotRun) {
  WorkloadOptions o;
  o.input_len = 300;
  o.output_len = 200;
  EXPECT_TRUE(ValidateWorkload(o, 512).ok());
  o.input_len_range = 0.1;  // up to 330 + 200 > 512
  EXPECT_FALSE(ValidateWorkload(o, 512).ok());
  o = WorkloadOptions{};
  o.input_len = 1;
  EXPECT_FALSE(ValidateWorkload(o, 0).ok());
  o = WorkloadOptions{};
  o.request_rate = 0;
  EXPECT_FALSE(ValidateWorkload(o, 0).ok());
  o = WorkloadOptions{};
  o.output_len_range = 1.0;
  EXPECT_FALSE(ValidateWorkload(o, 0).ok());
  // Prefix groups: the prefix counts towards the context; the suffix may be
  // a single token; a prefix needs BOS + text.
  o = WorkloadOptions{};
  o.prefix_groups = 8;
  o.prefix_len = 320;
  o.input_len = 32;
  o.output_len = 32;
  EXPECT_TRUE(ValidateWorkload(o, 512).ok());
  o.output_len = 200;  // 320 + 32 + 200 > 512
  EXPECT_FALSE(ValidateWorkload(o, 512).ok());
  o.output_len = 32;
  o.input_len = 1;
  EXPECT_TRUE(ValidateWorkload(o, 512).ok());
  o.prefix_len = 1;
  EXPECT_FALSE(ValidateWorkload(o, 512).ok());
  o.prefix_len = 320;
  o.prefix_groups = -1;
  EXPECT_FALSE(ValidateWorkload(o, 512).ok());
}

}  // namespace
}  // namespace latentkv::bench
