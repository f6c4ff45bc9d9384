// Calibration capture and the reference forward on the real stories260K.
#include "model/transform/calibration.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/transform/forward.h"
#include "model/transform/test_util.h"
#include "model/weights.h"

namespace latentkv::model::transform {
namespace {

using testing::NewDir;
using testing::SampleSequences;
using testing::Stories260kDir;
using testing::TextPath;

TEST(CalibrationTest, LoadsLinesWithBosCutAtContext) {
  auto w = LoadModel(Stories260kDir());
  ASSERT_TRUE(w.ok());
  ModelConfig c = (*w)->config;
  CalibrationTextOptions t;
  t.path = TextPath();
  t.max_lines = 5;
  auto docs = LoadCalibrationDocs(Stories260kDir(), c, t);
  ASSERT_TRUE(docs.ok()) << docs.status();
  ASSERT_EQ(docs->size(), 5u);
  for (const auto& d : *docs) {
    EXPECT_EQ(d[0], 1);
    EXPECT_GT(d.size(), 5u);
  }
  t.skip_lines = 1;
  auto shifted = LoadCalibrationDocs(Stories260kDir(), c, t);
  ASSERT_TRUE(shifted.ok());
  EXPECT_EQ((*shifted)[0], (*docs)[1]);
  c.max_position_embeddings = 7;
  auto cut = LoadCalibrationDocs(Stories260kDir(), c, t);
  ASSERT_TRUE(cut.ok());
  for (const auto& d : *cut) EXPECT_LE(d.size(), 7u);
  t.skip_lines = 1000000;
  EXPECT_EQ(LoadCalibrationDocs(Stories260kDir(), c, t).status().code(),
            absl::StatusCode::kInvalidArgument);
  t.path = NewDir("calib_missing") + "/none.txt";
  EXPECT_EQ(LoadCalibrationDocs(Stories260kDir(), c, t).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(CalibrationTest, ForwardIsCausalAndPerplexityIsSane) {
  auto w = LoadModel(Stories260kDir());
  ASSERT_TRUE(w.ok());
  const auto seq = SampleSequences()[2];
  auto full = Forward(**w, seq);
  ASSERT_TRUE(full.ok());
  const std::vector<int32_t> prefix(seq.begin(), seq.begin() + 6);
  auto part = Forward(**w, prefix);
  ASSERT_TRUE(part.ok());
  for (size_t i = 0; i < part->size(); ++i) {
    EXPECT_NEAR((*part)[i], (*full)[i], 1e-9);
  }
  CalibrationTextOptions t;
  t.path = TextPath();
  t.max_lines = 10;
  auto docs = LoadCalibrationDocs(Stories260kDir(), (*w)->config, t);
  ASSERT_TRUE(docs.ok());
  auto ppl = Perplexity(**w, *docs);
  ASSERT_TRUE(ppl.ok());
  // stories260K is a real (tiny) trained model: far better than uniform.
  EXPECT_GT(ppl->perplexity, 1.0);
  EXPECT_LT(ppl->perplexity, 20.0);
  EXPECT_EQ(Forward(**w, {1, 512}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Forward(**w, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CalibrationTest, GroupMomentsContainPerHeadMoments) {
  auto w = LoadModel(Stories260kDir());
  ASSERT_TRUE(w.ok());
  CalibrationTextOptions t;
  t.path = TextPath();
  t.max_lines = 8;
  auto docs = LoadCalibrationDocs(Stories260kDir(), (*w)->config, t);
  ASSERT_TRUE(docs.ok());
  auto one = Calibrate(**w, *docs);
  CalibrationOptions co;
  co.kv_group_size = 2;
  co.attention_scores = false;
  auto two = Calibrate(**w, *docs, co);
  ASSERT_TRUE(one.ok() && two.ok());
  ASSERT_EQ(one->size(), 5u);
  const LayerStats& a = (*one)[2];
  const LayerStats& b = (*two)[2];
  EXPECT_EQ(a.tokens, b.tokens);
  ASSERT_EQ(a.v_moment.size(), 4u);
  ASSERT_EQ(b.v_moment.size(), 2u);
  // KV head 3 = group 1, member 1: block rows/cols 8..15 of the 16x16.
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 8; ++c) {
      EXPECT_NEAR(b.v_moment[1][(8 + r) * 16 + 8 + c], a.v_moment[3][r * 8 + c],
                  1e-12);
    }
  }
  // Complex key moments: diagonal = E|k pair|^2 >= (E|k pair|)^2, Hermitian.
  for (int j = 0; j < 4; ++j) {
    const auto* m = &b.k_pair_moment[0][j * 4];
    EXPECT_GE(m[0].real() + 1e-12,
              a.k_pair_abs[0 * 4 + j] * a.k_pair_abs[0 * 4 + j]);
    EXPECT_NEAR(std::abs(m[1] - std::conj(m[2])), 0.0, 1e-12);
    EXPECT_NEAR(std::abs(a.k_pair_moment[0][j] - m[0]), 0.0, 1e-12);
  }
  for (double x : a.pair_logit_var) EXPECT_GE(x, 0.0);
  for (double x : a.pair_attn_mag) EXPECT_GT(x, 0.0);
  for (double x : b.pair_logit_var) EXPECT_EQ(x, 0.0);  // not requested
  EXPECT_TRUE(a.kv_moment.empty());                     // not requested
  // The joint key/value moment [4*(8+8)]^2 holds every per-head moment on
  // its diagonal blocks: keys at 8g, values at 32 + 8g.
  co.kv_group_size = 1;
  co.kv_joint_moment = true;
  auto joint = Calibrate(**w, *docs, co);
  ASSERT_TRUE(joint.ok());
  const LayerStats& j2 = (*joint)[2];
  ASSERT_EQ(j2.kv_moment.size(), 64u * 64u);
  for (int g = 0; g < 4; ++g) {
    for (int r = 0; r < 8; ++r) {
      for (int c = 0; c < 8; ++c) {
        EXPECT_NEAR(j2.kv_moment[(8 * g + r) * 64 + 8 * g + c],
                    a.k_moment[g][r * 8 + c], 1e-12);
        EXPECT_NEAR(j2.kv_moment[(32 + 8 * g + r) * 64 + 32 + 8 * g + c],
                    a.v_moment[g][r * 8 + c], 1e-12);
      }
    }
  }
  co.kv_group_size = 3;
  EXPECT_EQ(Calibrate(**w, *docs, co).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::model::transform
