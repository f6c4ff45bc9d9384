// Cross-head KV-Latent on the real stories260K model (4 KV heads of 8 dims,
// 2 query heads each):
// - with every pair rotary and every value dim kept, the one latent KV head
//   reproduces the source layer's attention output (rotary layout, value
//   maps and W_o absorption checked by the distillation's independent
//   forward);
// - at full position-free rank the key maps keep each query head's logit
//   share on its own KV head's channels and nothing of the others';
// - latents over groups of 2 source heads are exact at full rank too;
// - a converted model loads with one KV head (or K / G with groups) and, at
//   the same bytes, has lower held-out perplexity than the per-head
//   conversion.
#include "model/transform/joint_latent.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/transform/calibration.h"
#include "model/transform/distill_layer.h"
#include "model/transform/forward.h"
#include "model/transform/kv_latent.h"
#include "model/transform/test_util.h"

namespace latentkv::model::transform {
namespace {

using testing::NewDir;
using testing::PartialLatentOptions;
using testing::Stories260kDir;
using testing::Stories260kDocs;
constexpr auto Load = testing::LoadOrNull;

struct Fixture {
  std::unique_ptr<ModelWeights> w;
  std::vector<LayerStats> stats;  // with the joint moments
};

Fixture Make() {
  Fixture f;
  f.w = Load(Stories260kDir());
  if (f.w) f.stats = testing::MomentsOrEmpty(*f.w, Stories260kDocs(0, 40));
  return f;
}

TEST(JointLatentTest, AllPairsAndAllValuesReproduceTheLayer) {
  Fixture f = Make();
  ASSERT_TRUE(f.w && f.stats.size() == 5);
  const auto doc = Stories260kDocs(500, 1);
  for (int l : {0, 4}) {
    // 4 heads x 4 pairs rotary (32 dims), no position-free dims; 32 values.
    auto m = BuildJointLayerMaps(*f.w, l, f.stats[l], {0, 1, 2, 3}, 32, 32);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_EQ(m->k.size(), 1u);
    ASSERT_EQ(m->inv_freq.size(), 16u);
    EXPECT_EQ(m->inv_freq[5], f.w->layers[l].rope_inv_freq[1]);  // head 1
    const AttentionTensors t = ApplyLayerMaps(*f.w, l, *m);
    testing::LayerCapture cap(l);
    ASSERT_TRUE(ObserveLayers(*f.w, doc, &cap).ok());
    const DistillShape shape{64, 8, 1, 32, 32, 32, t.rope_inv_freq.data()};
    auto d = [](const std::vector<float>& v) {
      return std::vector<double>(v.begin(), v.end());
    };
    const LayerParams<double> p{d(t.q), d(t.k), d(t.v), d(t.o)};
    double energy = 0;
    for (double v : cap.y) energy += v * v;
    const double loss =
        LayerLoss(shape, p, cap.x.data(), cap.y.data(), cap.last_tokens);
    EXPECT_LT(loss, 1e-9 * energy) << "layer " << l;
  }
}

// Two latent heads, each over 2 source KV heads: exact with every pair and
// value kept; a group size not dividing the KV heads is refused.
TEST(JointLatentTest, GroupedLatentsReproduceTheLayer) {
  Fixture f = Make();
  ASSERT_TRUE(f.w && f.stats.size() == 5);
  const auto doc = Stories260kDocs(500, 1);
  const int l = 3;
  auto m = BuildJointLayerMaps(*f.w, l, f.stats[l], {0, 1, 2, 3}, 16, 16, 2);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->k.size(), 2u);
  ASSERT_EQ(m->v.size(), 2u);
  ASSERT_EQ(m->k[1].size(), 16u * 16u);  // [d_qk, 2 source heads x 8]
  const AttentionTensors t = ApplyLayerMaps(*f.w, l, *m);
  testing::LayerCapture cap(l);
  ASSERT_TRUE(ObserveLayers(*f.w, doc, &cap).ok());
  const DistillShape shape{64, 8, 2, 16, 16, 16, t.rope_inv_freq.data()};
  auto d = [](const std::vector<float>& v) {
    return std::vector<double>(v.begin(), v.end());
  };
  const LayerParams<double> p{d(t.q), d(t.k), d(t.v), d(t.o)};
  double energy = 0;
  for (double v : cap.y) energy += v * v;
  EXPECT_LT(LayerLoss(shape, p, cap.x.data(), cap.y.data(), cap.last_tokens),
            1e-9 * energy);
  // Every query head gets its read-back map from its own group.
  for (int h = 0; h < 8; ++h) {
    double o_norm = 0;
    for (double x : m->o[h]) o_norm += x * x;
    EXPECT_GT(o_norm, 0) << h;
  }
  EXPECT_FALSE(
      BuildJointLayerMaps(*f.w, l, f.stats[l], {0, 1, 2, 3}, 16, 16, 3).ok());
}

TEST(JointLatentTest, FullRankKeysKeepEachHeadsOwnLogitShare) {
  Fixture f = Make();
  ASSERT_TRUE(f.w && f.stats.size() == 5);
  // Pair 1 rotary in every head (8 dims), the other 6 channels of each of the
  // 4 heads position-free at full rank (24 dims).
  auto m = BuildJointLayerMaps(*f.w, 2, f.stats[2], {1}, 32, 8);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::vector<int> free = {0, 2, 3, 4, 6, 7};
  const double scale = std::sqrt(32.0 / 8.0);
  for (int h = 0; h < 8; ++h) {
    for (int a : free) {
      for (int g = 0; g < 4; ++g) {
        for (int b : free) {
          double form = 0;  // sum over position-free rows of q[i][a] k[i][g,b]
          for (int i = 8; i < 32; ++i) {
            form += m->q[h][i * 8 + a] * m->k[0][i * 32 + g * 8 + b];
          }
          const double want = (g == h / 2 && a == b) ? scale : 0.0;
          EXPECT_NEAR(form, want, 1e-6)
              << "head " << h << " [" << a << "; " << g << "," << b << "]";
        }
      }
    }
  }
  EXPECT_FALSE(BuildJointLayerMaps(*f.w, 2, f.stats[2], {1}, 34, 8).ok());
  EXPECT_FALSE(BuildJointLayerMaps(*f.w, 2, f.stats[2], {1}, 16, 33).ok());
}

TEST(JointLatentTest, OneLatentHeadBeatsPerHeadLatentsAtTheSameBytes) {
  KvLatentOptions o = PartialLatentOptions(200);  // d_qk 6 (rope 2), d_vo 4
  const std::string per_head = NewDir("per_head"), joint = NewDir("joint");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), per_head, o).ok());
  o.joint_heads = true;
  const absl::Status s = ConvertKvLatent(Stories260kDir(), joint, o);
  ASSERT_TRUE(s.ok()) << s;
  auto a = Load(per_head);
  auto b = Load(joint);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(b->config.num_kv_heads, 1);
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ(b->config.qk_head_dim[l], 24);
    EXPECT_EQ(b->config.vo_head_dim[l], 16);
    EXPECT_EQ(b->config.rope_dim(l), 8);
  }
  EXPECT_EQ(a->config.KvValuesPerToken(), b->config.KvValuesPerToken());
  const auto held_out = Stories260kDocs(1000, 40);
  auto pa = Perplexity(*a, held_out);
  auto pb = Perplexity(*b, held_out);
  ASSERT_TRUE(pa.ok() && pb.ok());
  std::printf("held-out ppl: per head %.3f, one latent head %.3f\n",
              pa->perplexity, pb->perplexity);
  EXPECT_LT(pb->perplexity, pa->perplexity);
  // Two latent heads over 2 source heads each: a model tensor parallelism
  // can split in two, at the same bytes.
  o.joint_group = 2;
  const std::string grouped = NewDir("joint_grouped");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), grouped, o).ok());
  auto g = Load(grouped);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->config.num_kv_heads, 2);
  EXPECT_EQ(g->config.qk_head_dim[0], 12);
  EXPECT_EQ(g->config.rope_dim(0), 4);
  EXPECT_EQ(g->config.KvValuesPerToken(), a->config.KvValuesPerToken());
  auto pg = Perplexity(*g, held_out);
  ASSERT_TRUE(pg.ok());
  std::printf("held-out ppl: two latent heads of two source heads %.3f\n",
              pg->perplexity);
  EXPECT_LT(pg->perplexity, pa->perplexity);
  o.joint_group = 3;
  EXPECT_EQ(ConvertKvLatent(Stories260kDir(), NewDir("joint_bad"), o).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::model::transform
