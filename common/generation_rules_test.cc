// The shared admission rules, one case per rule and its boundary.
#include "common/generation_rules.h"

#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace latentkv {
namespace {

struct Case {
  const char* name;
  std::vector<int32_t> prompt;
  int64_t max_new;
  float temperature, top_p;
  int64_t top_k;
  bool ok;
};

TEST(GenerationRulesTest, EveryRuleAndItsBoundary) {
  const GenerationLimits limits{.vocab_size = 10, .context = 8};
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Case> cases = {
      {"typical", {1, 2, 3}, 5, 0.7f, 0.9f, 40, true},
      {"fills the context exactly", {1, 2, 3}, 5, 0, 1, 0, true},
      {"one past the context", {1, 2, 3}, 6, 0, 1, 0, false},
      {"empty prompt", {}, 1, 0, 1, 0, false},
      {"prompt fills the context", std::vector<int32_t>(8, 1), 1, 0, 1, 0,
       false},
      {"token id = vocab", {1, 10}, 1, 0, 1, 0, false},
      {"negative token id", {-1}, 1, 0, 1, 0, false},
      {"largest token id", {9}, 1, 0, 1, 0, true},
      {"no new tokens", {1}, 0, 0, 1, 0, false},
      {"negative temperature", {1}, 1, -0.1f, 1, 0, false},
      {"infinite temperature", {1}, 1, inf, 1, 0, false},
      {"NaN temperature", {1}, 1, nan, 1, 0, false},
      {"top_p 0", {1}, 1, 1, 0, 0, false},
      {"top_p above 1", {1}, 1, 1, 1.01f, 0, false},
      {"top_p NaN", {1}, 1, 1, nan, 0, false},
      {"negative top_k", {1}, 1, 1, 1, -1, false},
  };
  for (const auto& [logprobs, ok] : std::vector<std::pair<int32_t, bool>>{
           {-2, false}, {-1, true}, {0, true}, {20, true}, {21, false}}) {
    const std::vector<int32_t> prompt = {1};
    GenerationParams p{.prompt = prompt, .max_new_tokens = 1};
    p.logprobs = logprobs;
    EXPECT_EQ(ValidateGeneration(p, limits).ok(), ok) << logprobs;
  }
  for (const Case& c : cases) {
    const absl::Status st = ValidateGeneration(
        {c.prompt, c.max_new, c.temperature, c.top_p, c.top_k}, limits);
    EXPECT_EQ(st.ok(), c.ok) << c.name << ": " << st;
    if (!c.ok) {
      EXPECT_TRUE(absl::IsInvalidArgument(st)) << c.name;
    }
  }
}

}  // namespace
}  // namespace latentkv
