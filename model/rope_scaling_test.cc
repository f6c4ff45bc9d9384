// RoPE scaling tables against values computed independently with HF
// transformers' formulas (modeling_rope_utils: _compute_llama3_parameters,
// _compute_yarn_parameters, re-run in plain Python for these configs), and
// which layers they apply to.
#include "model/rope_scaling.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "model/weights.h"

namespace latentkv::model {
namespace {

// Llama 3.1: theta 500000, d 128, factor 8, low 1, high 4, original 8192.
TEST(RopeScalingTest, Llama3MatchesHf) {
  ModelConfig c = ModelConfig::Llama(4096, 64, 1, 32, 8, 100, 131072, 5e5);
  c.rope_scaling.type = ModelConfig::RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position = 8192;
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  const std::vector<float> inv = DefaultRopeInvFreq(c, 0);
  const std::pair<int, double> want[] = {{0, 1.0},
                                         {10, 0.12868737343265052},
                                         {20, 0.016560440080994446},
                                         {30, 0.0013718935677611381},
                                         {40, 3.428102195952591e-05},
                                         {45, 1.2297638677963614e-05},
                                         {50, 4.411534674558404e-06},
                                         {63, 3.068925988914511e-07}};
  for (auto [j, v] : want) EXPECT_NEAR(inv[j], v, v * 2e-7) << "pair " << j;
}

// YaRN: theta 10000, d 64, factor 4, original 2048 (beta 32 / 1: pairs
// 0-7 extrapolated, 21+ interpolated, a ramp between); mscale 1.1386.
TEST(RopeScalingTest, YarnMatchesHf) {
  ModelConfig c = ModelConfig::Llama(256, 64, 1, 4, 4, 100, 8192, 1e4);
  c.rope_scaling.type = ModelConfig::RopeScaling::Type::kYarn;
  c.rope_scaling.factor = 4;
  c.rope_scaling.original_max_position = 2048;
  ASSERT_TRUE(c.Validate().ok());
  const std::vector<float> inv = DefaultRopeInvFreq(c, 0);
  const std::pair<int, double> want[] = {{0, 1.0},
                                         {5, 0.23713737056616555},
                                         {8, 0.1},
                                         {10, 0.049745578766838564},
                                         {15, 0.00794983930712751},
                                         {20, 0.0009730085108210396},
                                         {25, 0.00018747355233311394},
                                         {31, 3.33380358040831e-05}};
  for (auto [j, v] : want) EXPECT_NEAR(inv[j], v, v * 2e-7) << "pair " << j;
  const double mscale = 1.138629436111989;
  EXPECT_NEAR(c.attention_scale(0), mscale * mscale / 8.0, 1e-6);
}

// Linear and stored factors divide; Gemma-style local layers (their own
// base) stay unscaled.
TEST(RopeScalingTest, LinearFactorsAndLocalLayers) {
  ModelConfig c = ModelConfig::Llama(64, 64, 2, 4, 4, 100, 512, 1e4);
  c.rope_freq_factors = {1, 2, 4, 8, 1, 1, 1, 1};
  c.rope_scaling.type = ModelConfig::RopeScaling::Type::kLinear;
  c.rope_scaling.factor = 8;
  c.sliding_window = {16, 0};
  c.rope_local_theta = 10;
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  const std::vector<float> local = DefaultRopeInvFreq(c, 0);
  const std::vector<float> global = DefaultRopeInvFreq(c, 1);
  for (int j = 0; j < 8; ++j) {
    EXPECT_FLOAT_EQ(local[j], std::pow(10.0, -2.0 * j / 16));
    EXPECT_FLOAT_EQ(global[j],
                    std::pow(1e4, -2.0 * j / 16) / c.rope_freq_factors[j] / 8);
  }
  // Factors of the wrong length are refused.
  c.rope_freq_factors = {1, 2};
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::model
