#include "worker/residency/policy.h"

#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ResidencyOptions Spindle(double budget) {
  ResidencyOptions o;
  o.policy = "spindle";
  o.budget = budget;
  o.codebook_layers = 0;
  o.window = 4;
  return o;
}

// Sliding-window layers get a capacity of 2W (a smaller given capacity
// stays); without windows, or with bound_windows off, policy "none" plans
// nothing.
TEST(ResidencyPlanTest, SlidingWindowsBecomeCapacities) {
  ResidencyOptions none;
  const std::vector<int32_t> windows = {512, 512, 0, 4};
  EXPECT_TRUE(ResidencyPlan::Needed(none, windows));
  EXPECT_FALSE(ResidencyPlan::Needed(none, {}));
  EXPECT_FALSE(ResidencyPlan::Needed(none, {0, 0, 0, 0}));
  auto plan = ResidencyPlan::CreateIfEnabled(none, 4, 4, 1, windows);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_NE(*plan, nullptr);
  EXPECT_THAT((*plan)->capacities(), ElementsAre(1024, 1024, 0, 8));
  EXPECT_EQ((*plan)->window(0), 512);
  EXPECT_EQ((*plan)->window(2), 0);
  EXPECT_FALSE((*plan)->keeps_everything());
  EXPECT_THAT((*plan)->Describe(), HasSubstr("F/cap1024/win512"));

  ResidencyOptions capped;
  capped.capacity = {600};
  plan = ResidencyPlan::Create(capped, 4, 4, 1, windows);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT((*plan)->capacities(), ElementsAre(600, 600, 600, 8));

  ResidencyOptions off;
  off.bound_windows = false;
  EXPECT_FALSE(ResidencyPlan::Needed(off, windows));
  plan = ResidencyPlan::CreateIfEnabled(off, 4, 4, 1, windows);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(*plan, nullptr);

  EXPECT_EQ(ResidencyPlan::Create(none, 4, 4, 1, {512}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ResidencyPlanTest, PyramidBudgetsDecreaseLinearlyWithMeanOnTarget) {
  ResidencyOptions o = Spindle(0.4);
  o.pyramid_beta = 4.0;
  auto plan = ResidencyPlan::Create(o, 5, 8, 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // mean = 400 of 1000; b_min = 100, b_max = 700; steps of 150.
  std::vector<int64_t> b;
  for (int l = 0; l < 5; ++l) b.push_back((*plan)->PromptBudget(l, 1000));
  EXPECT_THAT(b, ElementsAre(700, 550, 400, 250, 100));
  EXPECT_EQ(std::accumulate(b.begin(), b.end(), int64_t{0}) / 5, 400);
}

TEST(ResidencyPlanTest, BudgetsClampToWindowAndPrompt) {
  ResidencyOptions o = Spindle(0.9);
  o.pyramid_beta = 20;
  o.window = 8;
  auto plan = ResidencyPlan::Create(o, 3, 4, 4);
  ASSERT_TRUE(plan.ok());
  // b_max = 2*0.9*10 - 0.45 > 10: clamped to the prompt; b_min 0.45 -> window.
  EXPECT_EQ((*plan)->PromptBudget(0, 10), 10);
  EXPECT_EQ((*plan)->PromptBudget(2, 10), 8);
  // A prompt shorter than the window is kept whole.
  EXPECT_EQ((*plan)->PromptBudget(2, 5), 5);
}

TEST(ResidencyPlanTest, CodebookLayersAreTheShallowOnes) {
  ResidencyOptions o;
  o.policy = "spindle";
  auto plan = ResidencyPlan::Create(o, 8, 8, 8);  // default: ceil(8/4) = 2
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ((*plan)->policy(0), LayerPolicy::kCodebook);
  EXPECT_EQ((*plan)->policy(1), LayerPolicy::kCodebook);
  EXPECT_EQ((*plan)->policy(2), LayerPolicy::kEvict);
  EXPECT_EQ((*plan)->policy(7), LayerPolicy::kEvict);
  // Codebook layers keep every token.
  EXPECT_EQ((*plan)->PromptBudget(0, 100), 100);
  EXPECT_THAT((*plan)->Describe(), HasSubstr("layers=C,C,E,E,E,E,E,E"));
}

TEST(ResidencyPlanTest, CapacityPerLayerAndTargets) {
  ResidencyOptions o;
  o.capacity = {64, 0, 17};
  auto plan = ResidencyPlan::Create(o, 3, 2, 2);
  ASSERT_TRUE(plan.ok());
  EXPECT_THAT((*plan)->capacities(), ElementsAre(64, 0, 17));
  EXPECT_EQ((*plan)->CapacityTarget(0), 56);  // slack 64/8
  EXPECT_EQ((*plan)->CapacityTarget(2), 15);  // slack 2
  EXPECT_FALSE((*plan)->keeps_everything());
  ResidencyOptions none;
  EXPECT_TRUE((*ResidencyPlan::Create(none, 3, 2, 2))->keeps_everything());
}

TEST(ResidencyPlanTest, RejectsBadOptions) {
  auto code = [](ResidencyOptions o) {
    return ResidencyPlan::Create(o, 4, 8, 4).status().code();
  };
  const auto kBad = absl::StatusCode::kInvalidArgument;
  ResidencyOptions o;
  o.policy = "h2o";
  EXPECT_EQ(code(o), kBad);
  o = Spindle(0.0);
  EXPECT_EQ(code(o), kBad);
  o = Spindle(1.5);
  EXPECT_EQ(code(o), kBad);
  o = Spindle(0.5);
  o.pool_kernel = 4;
  EXPECT_EQ(code(o), kBad);
  o = Spindle(0.5);
  o.theta_k = 0;
  EXPECT_EQ(code(o), kBad);
  o = Spindle(0.5);
  o.capacity = {1, 2};  // neither one value nor one per layer
  EXPECT_EQ(code(o), kBad);
  o = Spindle(0.5);
  o.capacity = {8};
  o.capacity_slack = 8;  // no room left
  EXPECT_EQ(code(o), kBad);
  EXPECT_EQ(ResidencyPlan::Create(Spindle(0.5), 4, 6, 4).status().code(), kBad);
  EXPECT_FALSE(ParseCapacityList("12,x").ok());
  EXPECT_THAT(*ParseCapacityList("12,0,3"), ElementsAre(12, 0, 3));
}

TEST(SelectSlotsTest, KeepsWindowThenTopScores) {
  // 10 slots at positions 0..9; window = positions >= 8.
  std::vector<int32_t> pos(10);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> s = {0.1f, 0.9f, 0.2f, 0.05f, 0.8f,
                          0.3f, 0.0f, 0.4f, 0.0f,  0.0f};
  EXPECT_THAT(SelectSlots(s.data(), 1, 10, pos.data(), 4, 8, 1),
              ElementsAre(1, 4, 8, 9));
  // Budget below the window: the latest window slots.
  EXPECT_THAT(SelectSlots(s.data(), 1, 10, pos.data(), 1, 8, 1),
              ElementsAre(9));
  // n <= budget keeps all.
  EXPECT_EQ(SelectSlots(s.data(), 1, 10, pos.data(), 10, 8, 1).size(), 10u);
}

TEST(SelectSlotsTest, MaxPoolingKeepsNeighboursOfHeavyHitters) {
  std::vector<int32_t> pos(9);
  std::iota(pos.begin(), pos.end(), 0);
  // One heavy hitter at slot 3; window at position 8.
  std::vector<float> s = {0.1f, 0.0f, 0.0f, 5.0f, 0.0f, 0.0f, 0.2f, 0.0f, 0.f};
  // Pool 3: slots 2, 3, 4 all pool to 5 and win; ties go to the earlier slot.
  EXPECT_THAT(SelectSlots(s.data(), 1, 9, pos.data(), 4, 8, 3),
              ElementsAre(2, 3, 4, 8));
}

TEST(SelectSlotsTest, GqaUnionKeepsEveryQueryHeadsTopChoice) {
  // Two query heads share a KV head. Head 0 loves slot 0, head 1 slot 5;
  // slot 2 is everybody's second choice and would win an average.
  std::vector<int32_t> pos(7);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> s = {
      0.9f, 0.0f, 0.6f, 0.0f, 0.0f, 0.0f, 0.0f,  // head 0
      0.0f, 0.0f, 0.6f, 0.0f, 0.0f, 0.9f, 0.0f,  // head 1
  };
  // Budget 3 = window (slot 6) + one choice per head.
  EXPECT_THAT(SelectSlots(s.data(), 2, 7, pos.data(), 3, 6, 1),
              ElementsAre(0, 5, 6));
  // Averaging the heads' scores instead would keep slot 2 (0.6 > 0.45).
}

}  // namespace
}  // namespace latentkv::worker
