// MHA -> GQA conversion tests on the real stories260K model (4 KV heads).
#include "model/transform/gqa.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/transform/calibration.h"
#include "model/transform/forward.h"
#include "model/transform/test_util.h"
#include "model/weights.h"

namespace latentkv::model::transform {
namespace {

using ::testing::HasSubstr;
using testing::MaxRelativeError;
using testing::NewDir;
using testing::SampleSequences;
using testing::Stories260kDir;
using testing::TextPath;

GqaOptions Options(int n, int lines = 200) {
  GqaOptions o;
  o.num_kv_heads = n;
  o.calibration.path = TextPath();
  o.calibration.max_lines = lines;
  return o;
}

TEST(GqaTest, SameHeadCountKeepsLogits) {
  const std::string out = NewDir("gqa_same");
  ASSERT_TRUE(ConvertGqa(Stories260kDir(), out, Options(4, 30)).ok());
  auto src = LoadModel(Stories260kDir());
  auto dst = LoadModel(out);
  ASSERT_TRUE(src.ok() && dst.ok());
  EXPECT_EQ((*dst)->config.num_kv_heads, 4);
  for (const auto& seq : SampleSequences()) {
    auto a = Forward(**src, seq);
    auto b = Forward(**dst, seq);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_LT(MaxRelativeError(*b, *a), 1e-5);
  }
}

TEST(GqaTest, TwoKvHeadsLoadsAndHasFinitePerplexity) {
  const std::string out = NewDir("gqa_2");
  ASSERT_TRUE(ConvertGqa(Stories260kDir(), out, Options(2)).ok());
  auto src = LoadModel(Stories260kDir());
  auto dst = LoadModel(out);
  ASSERT_TRUE(src.ok() && dst.ok()) << dst.status();
  const ModelConfig& c = (*dst)->config;
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.qk_head_dim, std::vector<int>(5, 8));
  EXPECT_EQ((*dst)->layers[0].k_proj.shape, (std::vector<int64_t>{16, 64}));
  CalibrationTextOptions t;
  t.path = TextPath();
  t.skip_lines = 1000;
  t.max_lines = 40;
  auto docs = LoadCalibrationDocs(out, c, t);
  ASSERT_TRUE(docs.ok()) << docs.status();
  auto base = Perplexity(**src, *docs);
  auto ppl = Perplexity(**dst, *docs);
  ASSERT_TRUE(base.ok() && ppl.ok());
  std::printf("held-out ppl: original %.3f, gqa 4->2 KV heads %.3f\n",
              base->perplexity, ppl->perplexity);
  EXPECT_TRUE(std::isfinite(ppl->perplexity));
  EXPECT_GT(ppl->perplexity, 1.0);
}

TEST(GqaTest, AttentionFromGroupStatisticsHasGqaShapes) {
  // N = 1 (G = 4) from statistics gathered with the matching group size:
  // GQA shapes, the standard RoPE table kept implicit.
  auto src = LoadModel(Stories260kDir());
  ASSERT_TRUE(src.ok());
  CalibrationTextOptions t;
  t.path = TextPath();
  t.max_lines = 10;
  auto docs = LoadCalibrationDocs(Stories260kDir(), (*src)->config, t);
  ASSERT_TRUE(docs.ok());
  CalibrationOptions co;
  co.kv_group_size = 4;
  co.attention_scores = false;
  auto stats = Calibrate(**src, *docs, co);
  ASSERT_TRUE(stats.ok());
  auto attn = GqaAttention(**src, *stats, 1);
  ASSERT_TRUE(attn.ok()) << attn.status();
  EXPECT_EQ((*attn)[0].k.size(), 8u * 64u);
  EXPECT_EQ((*attn)[0].v.size(), 8u * 64u);
  EXPECT_EQ((*attn)[0].o.size(), 64u * 64u);
  EXPECT_TRUE((*attn)[0].rope_inv_freq.empty());
  // Mismatched statistics (group 4 used for N = 2) are refused.
  EXPECT_EQ(GqaAttention(**src, *stats, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GqaTest, BadInputsAreRejectedWithReasons) {
  const std::string out = NewDir("gqa_bad");
  absl::Status s = ConvertGqa(Stories260kDir(), out, Options(3));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("divisor"));
  s = ConvertGqa(Stories260kDir(), out, Options(8));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = ConvertGqa(Stories260kDir(), out, Options(0));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  GqaOptions no_text = Options(2);
  no_text.calibration.path.clear();
  s = ConvertGqa(Stories260kDir(), out, no_text);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--calib-text"));
  s = ConvertGqa(out + "/missing", out + "/x", Options(2));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace latentkv::model::transform
