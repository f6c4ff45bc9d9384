// KV-Latent conversion tests on the real stories260K model (head size 8):
// exactness of the calibrated init at full dims, the strided init's row
// selection, calibrated beating strided in perplexity, and bad inputs.
#include "model/transform/kv_latent.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/safetensors.h"
#include "model/transform/calibration.h"
#include "model/transform/forward.h"
#include "model/transform/model_writer.h"
#include "model/transform/pair_search.h"
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

constexpr auto Load = testing::LoadOrNull;

KvLatentOptions Options(int d_qk, int d_vo, KvLatentInit init,
                        int calib_lines = 200) {
  KvLatentOptions o;
  o.d_qk = d_qk;
  o.d_vo = d_vo;
  o.init = init;
  o.allocate_ranks = false;  // the uniform per-head methods under test
  o.joint_heads = false;
  o.calibration.path = TextPath();
  o.calibration.max_lines = calib_lines;
  return o;
}

// Held-out documents: 40 lines after the first 1000 non-empty ones.
std::vector<std::vector<int32_t>> HeldOut(const ModelConfig& c) {
  CalibrationTextOptions t;
  t.path = TextPath();
  t.skip_lines = 1000;
  t.max_lines = 40;
  auto docs = LoadCalibrationDocs(Stories260kDir(), c, t);
  EXPECT_TRUE(docs.ok()) << docs.status();
  return docs.ok() ? *docs : std::vector<std::vector<int32_t>>();
}

TEST(KvLatentTest, CalibratedAtFullDimsKeepsLogits) {
  auto src = Load(Stories260kDir());
  ASSERT_TRUE(src);
  for (ValueBasis basis : {ValueBasis::kOutputWeighted, ValueBasis::kPca}) {
    const std::string out = NewDir("kvl_full");
    KvLatentOptions o = Options(8, 8, KvLatentInit::kCalibrated, 30);
    o.rope_dims = 8;  // every pair rotary: the conversion is the identity
    o.value_basis = basis;
    ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), out, o).ok());
    auto dst = Load(out);
    ASSERT_TRUE(dst);
    for (int l = 0; l < 5; ++l) {
      EXPECT_EQ(dst->layers[l].rope_inv_freq, src->layers[l].rope_inv_freq);
    }
    for (const auto& seq : SampleSequences()) {
      auto a = Forward(*src, seq);
      auto b = Forward(*dst, seq);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_LT(MaxRelativeError(*b, *a), 1e-5)
          << "basis " << static_cast<int>(basis);
    }
  }
}

TEST(KvLatentTest, StridedKeepsEveryRthRowAndColumn) {
  const std::string out = NewDir("kvl_strided");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), out,
                              Options(4, 4, KvLatentInit::kStrided))
                  .ok());
  auto src = Load(Stories260kDir());
  auto dst = Load(out);
  ASSERT_TRUE(src && dst);
  const ModelConfig& c = dst->config;
  EXPECT_EQ(c.rope_scheme, RopeScheme::kFrequencyAware);
  EXPECT_EQ(c.qk_head_dim, std::vector<int>(5, 4));
  EXPECT_EQ(c.vo_head_dim, std::vector<int>(5, 4));
  auto file = SafetensorsFile::Open(out + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  const int64_t h = 64;
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ((*file)->Find("model.layers." + std::to_string(l) +
                            ".self_attn.rotary_inv_freq"),
              nullptr);
    EXPECT_EQ(dst->layers[l].rope_inv_freq, DefaultRopeInvFreq(c, l));
    const LayerWeights& a = src->layers[l];
    const LayerWeights& b = dst->layers[l];
    auto row_eq = [&](const Tensor& old_t, int64_t old_row, const Tensor& new_t,
                      int64_t new_row) {
      for (int64_t col = 0; col < h; ++col) {
        ASSERT_EQ(new_t.f32()[new_row * h + col],
                  old_t.f32()[old_row * h + col])
            << "layer " << l << " row " << new_row;
      }
    };
    for (int head = 0; head < 8; ++head) {
      for (int i = 0; i < 4; ++i) {
        row_eq(a.q_proj, head * 8 + 2 * i, b.q_proj, head * 4 + i);
        for (int64_t r = 0; r < h; ++r) {
          ASSERT_EQ(b.o_proj.f32()[r * 32 + head * 4 + i],
                    a.o_proj.f32()[r * 64 + head * 8 + 2 * i]);
        }
      }
    }
    for (int head = 0; head < 4; ++head) {
      for (int i = 0; i < 4; ++i) {
        row_eq(a.k_proj, head * 8 + 2 * i, b.k_proj, head * 4 + i);
        row_eq(a.v_proj, head * 8 + 2 * i, b.v_proj, head * 4 + i);
      }
    }
  }
}

TEST(KvLatentTest, CalibratedKeepsSelectedPairsWithTheirFrequencies) {
  const std::string out = NewDir("kvl_cal_struct");
  KvLatentOptions o = Options(4, 4, KvLatentInit::kCalibrated, 30);
  o.rope_dims = 4;  // the pair-keeping init: no position-free dims
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), out, o).ok());
  auto src = Load(Stories260kDir());
  auto dst = Load(out);
  ASSERT_TRUE(src && dst);
  auto file = SafetensorsFile::Open(out + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  const float scale = std::sqrt(4.0f / 8.0f);
  for (int l = 0; l < 5; ++l) {
    ASSERT_NE((*file)->Find("model.layers." + std::to_string(l) +
                            ".self_attn.rotary_inv_freq"),
              nullptr);
    const std::vector<float>& inv = dst->layers[l].rope_inv_freq;
    ASSERT_EQ(inv.size(), 2u);
    for (int i = 0; i < 2; ++i) {
      // Which original pair has this frequency (standard table: distinct).
      int j = 0;
      while (j < 4 && src->layers[l].rope_inv_freq[j] != inv[i]) ++j;
      ASSERT_LT(j, 4);
      if (i == 1) {
        EXPECT_GT(inv[0], inv[1]) << "kept pairs ascending";
      }
      for (int side = 0; side < 2; ++side) {
        for (int64_t col = 0; col < 64; ++col) {
          EXPECT_FLOAT_EQ(
              dst->layers[l].q_proj.f32()[(3 * 4 + i + 2 * side) * 64 + col],
              src->layers[l].q_proj.f32()[(3 * 8 + j + 4 * side) * 64 + col] *
                  scale);
          EXPECT_EQ(
              dst->layers[l].k_proj.f32()[(1 * 4 + i + 2 * side) * 64 + col],
              src->layers[l].k_proj.f32()[(1 * 8 + j + 4 * side) * 64 + col]);
        }
      }
    }
  }
}

TEST(KvLatentTest, CalibratedBeatsStridedInPerplexity) {
  auto src = Load(Stories260kDir());
  ASSERT_TRUE(src);
  const auto held_out = HeldOut(src->config);
  ASSERT_EQ(held_out.size(), 40u);
  auto ppl_of = [&](const ModelWeights& w) {
    auto r = Perplexity(w, held_out);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->perplexity : INFINITY;
  };
  auto ppl = [&](const std::string& dir) { return ppl_of(*Load(dir)); };
  const double base = ppl_of(*src);
  const std::string strided = NewDir("kvl_ppl_strided");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), strided,
                              Options(4, 4, KvLatentInit::kStrided))
                  .ok());
  const double strided_ppl = ppl(strided);
  const std::string cal = NewDir("kvl_ppl_cal");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), cal,
                              Options(4, 4, KvLatentInit::kCalibrated))
                  .ok());
  const double cal_ppl = ppl(cal);
  std::printf(
      "held-out ppl (40 lines after line 1000): original %.3f\n"
      "  d_qk=d_vo=4 strided %.3f, calibrated default (rope 2 + 2 "
      "position-free dims, output-weighted V, W_o refit) %.3f\n",
      base, strided_ppl, cal_ppl);
  EXPECT_LT(cal_ppl, strided_ppl);
  EXPECT_GT(cal_ppl, base * 0.999);  // lossy: not better than the original

  // Every pair criterion and value basis beats strided too (one calibration
  // pass with the attention scores, shared).
  CalibrationTextOptions t;
  t.path = TextPath();
  auto docs = LoadCalibrationDocs(Stories260kDir(), src->config, t);
  ASSERT_TRUE(docs.ok());
  auto stats = Calibrate(*src, *docs);
  ASSERT_TRUE(stats.ok());
  ModelConfig config = src->config;
  config.qk_head_dim.assign(5, 4);
  config.vo_head_dim.assign(5, 4);
  for (PairCriterion crit :
       {PairCriterion::kLogitVariance, PairCriterion::kAttentionMagnitude,
        PairCriterion::kMagnitude}) {
    std::vector<std::vector<int>> kept;
    for (const LayerStats& st : *stats) {
      kept.push_back(SelectRotaryPairs(st, 4, crit));
    }
    // The plain method of the brief (E|q| E|k|, PCA) gets both bases.
    std::vector<ValueBasis> bases = {ValueBasis::kOutputWeighted};
    if (crit == PairCriterion::kMagnitude) bases.push_back(ValueBasis::kPca);
    for (ValueBasis basis : bases) {
      auto attn = CalibratedAttention(*src, *stats, kept, 4, basis);
      ASSERT_TRUE(attn.ok()) << attn.status();
      const std::string dir = NewDir("kvl_ppl_variant");
      ASSERT_TRUE(WriteConvertedModel(*src, Stories260kDir(), config, *attn,
                                      dir, DType::kF32, "test")
                      .ok());
      const double p = ppl(dir);
      std::printf("  calibrated, pair criterion %d, value basis %d: %.3f\n",
                  static_cast<int>(crit), static_cast<int>(basis), p);
      EXPECT_LT(p, strided_ppl);
      EXPECT_GE(p, cal_ppl * 0.999) << "the default should be the best";
    }
  }
}

TEST(KvLatentTest, GreedyPairSearchMatchesEnumerationForOneDrop) {
  auto src = Load(Stories260kDir());
  ASSERT_TRUE(src);
  CalibrationTextOptions t;
  t.path = TextPath();
  t.max_lines = 6;
  auto docs = LoadCalibrationDocs(Stories260kDir(), src->config, t);
  ASSERT_TRUE(docs.ok());
  // Keeping 3 of 4 pairs: one greedy step tries every single drop, exactly
  // what enumeration does.
  PairSearchOptions greedy;
  greedy.max_exhaustive = 0;
  auto a = SearchRotaryPairs(*src, *docs, 6);
  auto b = SearchRotaryPairs(*src, *docs, 6, greedy);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  auto c = SearchRotaryPairs(*src, *docs, 2, greedy);
  ASSERT_TRUE(c.ok());
  for (const auto& kept : *c) {
    ASSERT_EQ(kept.size(), 1u);
    EXPECT_LT(kept[0], 4);
  }
  EXPECT_EQ(SearchRotaryPairs(*src, *docs, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SearchRotaryPairs(*src, *docs, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KvLatentTest, BadInputsAreRejectedWithReasons) {
  const std::string out = NewDir("kvl_bad");
  const std::string m = Stories260kDir();
  auto err = [&](const KvLatentOptions& o) {
    return ConvertKvLatent(m, out, o);
  };
  absl::Status s = err(Options(6, 4, KvLatentInit::kStrided));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("multiple of 4"));
  s = err(Options(4, 3, KvLatentInit::kStrided));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("must be integers"));
  s = err(Options(16, 4, KvLatentInit::kCalibrated));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("cannot grow"));
  s = err(Options(3, 4, KvLatentInit::kCalibrated));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("even"));
  KvLatentOptions no_text = Options(4, 4, KvLatentInit::kCalibrated);
  no_text.calibration.path.clear();
  s = err(no_text);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--calib-text"));
  no_text.calibration.path = out + "/no_such.txt";
  EXPECT_EQ(err(no_text).code(), absl::StatusCode::kNotFound);
  s = ConvertKvLatent(out + "/no_model", out + "/x",
                      Options(4, 4, KvLatentInit::kStrided));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("config.json"));
  s = ConvertKvLatent(m, m, Options(4, 4, KvLatentInit::kStrided));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("source model directory"));
  // The strided init has no split and no distillation.
  KvLatentOptions strided_rope = Options(4, 4, KvLatentInit::kStrided);
  strided_rope.rope_dims = 2;
  s = err(strided_rope);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--init strided"));
  // More rotary dims than d_qk, or an odd count.
  KvLatentOptions bad_rope = Options(4, 4, KvLatentInit::kCalibrated);
  bad_rope.rope_dims = 6;
  EXPECT_EQ(err(bad_rope).code(), absl::StatusCode::kInvalidArgument);
  bad_rope.rope_dims = 3;
  EXPECT_EQ(err(bad_rope).code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvLatentTest, ParsesFlags) {
  KvLatentOptions o;
  ASSERT_TRUE(ParseKvLatentDims("d_qk=4,d_vo=2", &o).ok());
  EXPECT_EQ(o.d_qk, 4);
  EXPECT_EQ(o.d_vo, 2);
  EXPECT_EQ(ParseKvLatentDims("d_qk=4", &o).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseKvLatentDims("d_qk=4,d_x=2", &o).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseKvLatentDims("d_qk=a,d_vo=2", &o).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(o.rope_dims, -1);  // the default split
  ASSERT_TRUE(ParseKvLatentDims("d_qk=32,d_vo=32,rope=24", &o).ok());
  EXPECT_EQ(o.rope_dims, 24);
  EXPECT_EQ(ParseKvLatentDims("d_qk=4,d_vo=4,rope=-2", &o).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DefaultRopeDims(32), 24);
  EXPECT_EQ(DefaultRopeDims(4), 2);
  EXPECT_EQ(*ParsePairCriterion("rotation"), PairCriterion::kRotation);
  EXPECT_EQ(*ParsePairCriterion("search"), PairCriterion::kOutputSearch);
  EXPECT_EQ(ParsePairCriterion("best").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseKvLatentInit("strided"), KvLatentInit::kStrided);
  EXPECT_EQ(*ParseKvLatentInit("calibrated"), KvLatentInit::kCalibrated);
  EXPECT_EQ(ParseKvLatentInit("pca").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::model::transform
