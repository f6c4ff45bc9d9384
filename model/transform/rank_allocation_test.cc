// Per-layer rank allocation:
// - the dynamic programme finds the optimum an exhaustive search finds, on
//   random (non-convex) curves, under every budget, with every weight;
// - the error curves of the real stories260K model equal, point by point,
//   the squared output error of the converted layer built at that rank and
//   run by the distillation's independent forward (LayerLoss), vanish at
//   full rank and start from the output's energy; the same for cross-head
//   maps;
// - a converted model with allocated ranks loads with its per-layer dims.
#include "model/transform/rank_allocation.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "model/transform/calibration.h"
#include "model/transform/distill_layer.h"
#include "model/transform/forward.h"
#include "model/transform/joint_latent.h"
#include "model/transform/kv_latent.h"
#include "model/transform/test_util.h"
#include "model/weights.h"

namespace latentkv::model::transform {
namespace {

using testing::NewDir;
using testing::PartialLatentOptions;
using testing::Stories260kDir;
using testing::Stories260kDocs;
constexpr auto Load = testing::LoadOrNull;

double Weight(const LayerErrorCurves& c, AllocationWeight w) {
  if (w == AllocationWeight::kResidual) return 1.0 / c.residual_energy;
  if (w == AllocationWeight::kRelative) return 1.0 / c.output_energy;
  return 1.0;
}

// The least weighted error over every feasible choice, by enumeration.
double BruteForce(const std::vector<LayerErrorCurves>& curves, int64_t budget,
                  AllocationWeight w) {
  double best = std::numeric_limits<double>::infinity();
  std::function<void(size_t, int64_t, double)> go = [&](size_t l, int64_t left,
                                                        double sum) {
    if (l == curves.size()) {
      best = std::min(best, sum);
      return;
    }
    const LayerErrorCurves& c = curves[l];
    for (size_t cand = 0; cand < c.key.size(); ++cand) {
      const int rope = c.rope_dims[cand];
      for (size_t ki = 0; ki < c.key[cand].size(); ++ki) {
        const int64_t d_qk = rope + 2 * static_cast<int64_t>(ki);
        if (d_qk < 2) continue;
        for (size_t v = 2; v < c.value.size(); v += 2) {
          if (d_qk + static_cast<int64_t>(v) > left) continue;
          go(l + 1, left - d_qk - v,
             sum + Weight(c, w) * (c.key[cand][ki] + c.value[v]));
        }
      }
    }
  };
  go(0, budget, 0.0);
  return best;
}

double Objective(const std::vector<LayerErrorCurves>& curves,
                 const std::vector<LayerRanks>& ranks, AllocationWeight w) {
  double sum = 0.0;
  for (size_t l = 0; l < curves.size(); ++l) {
    const LayerErrorCurves& c = curves[l];
    const int cand = ranks[l].candidate;
    sum +=
        Weight(c, w) * (c.key[cand][(ranks[l].d_qk - c.rope_dims[cand]) / 2] +
                        c.value[ranks[l].d_vo]);
  }
  return sum;
}

TEST(RankAllocationTest, DynamicProgrammeMatchesExhaustiveSearch) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  // Layer shapes: head dims, and rotary-dims candidates (one layer has a
  // candidate without rotary dims, one a single candidate).
  const int hs[3] = {8, 6, 8}, hv[3] = {6, 8, 4};
  const std::vector<int> ropes[3] = {{2, 4}, {0, 2, 6}, {4}};
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<LayerErrorCurves> curves(3);
    for (int l = 0; l < 3; ++l) {
      LayerErrorCurves& c = curves[l];
      c.rope_dims = ropes[l];
      for (int rope : ropes[l]) {
        c.key.emplace_back();
        for (int i = 0; i <= (hs[l] - rope) / 2; ++i) {
          c.key.back().push_back(u(rng));
        }
      }
      for (int i = 0; i <= hv[l]; ++i) c.value.push_back(u(rng));
      c.residual_energy = 0.5 + u(rng);
      c.output_energy = 0.5 + u(rng);
    }
    for (AllocationWeight w :
         {AllocationWeight::kResidual, AllocationWeight::kRelative,
          AllocationWeight::kAbsolute}) {
      for (int64_t budget = 14; budget <= 42; budget += 2) {
        auto ranks = AllocateRanks(curves, budget, w);
        ASSERT_TRUE(ranks.ok()) << ranks.status() << " budget " << budget;
        int64_t used = 0;
        for (int l = 0; l < 3; ++l) {
          const LayerRanks& r = (*ranks)[l];
          ASSERT_GE(r.candidate, 0);
          ASSERT_LT(r.candidate, static_cast<int>(ropes[l].size()));
          used += r.d_qk + r.d_vo;
          EXPECT_GE(r.d_qk, std::max(2, ropes[l][r.candidate]));
          EXPECT_LE(r.d_qk, hs[l]);
          EXPECT_EQ(r.d_qk % 2, 0);
          EXPECT_GE(r.d_vo, 2);
          EXPECT_LE(r.d_vo, hv[l]);
          EXPECT_EQ(r.d_vo % 2, 0);
        }
        EXPECT_LE(used, budget);
        EXPECT_NEAR(Objective(curves, *ranks, w), BruteForce(curves, budget, w),
                    1e-12)
            << "trial " << trial << " budget " << budget;
      }
    }
  }
}

TEST(RankAllocationTest, WeightsMoveDimsAndBadBudgetsAreRefused) {
  // Two layers with the same curves; the first adds its error to a stream
  // 100x weaker, so the residual weight gives it the dims.
  LayerErrorCurves c;
  c.rope_dims = {2};
  c.key = {{4, 2, 1, 0}};
  c.value = {9, 8, 6, 5, 4, 3, 2, 1, 0};
  std::vector<LayerErrorCurves> curves = {c, c};
  curves[0].residual_energy = 1;
  curves[1].residual_energy = 100;
  curves[0].output_energy = curves[1].output_energy = 1;
  auto ranks = AllocateRanks(curves, 16, AllocationWeight::kResidual);
  ASSERT_TRUE(ranks.ok()) << ranks.status();
  EXPECT_EQ((*ranks)[0].d_qk + (*ranks)[0].d_vo, 12);
  EXPECT_EQ((*ranks)[1].d_qk + (*ranks)[1].d_vo, 4);
  EXPECT_FALSE(AllocateRanks(curves, 15, AllocationWeight::kResidual).ok());
  auto low = AllocateRanks(curves, 6, AllocationWeight::kResidual);
  EXPECT_EQ(low.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(low.status().message().find("below the minimum"),
            std::string::npos);
}

TEST(RankAllocationTest, ParsesWeights) {
  EXPECT_EQ(*ParseAllocationWeight("residual"), AllocationWeight::kResidual);
  EXPECT_EQ(*ParseAllocationWeight("relative"), AllocationWeight::kRelative);
  EXPECT_EQ(*ParseAllocationWeight("absolute"), AllocationWeight::kAbsolute);
  EXPECT_EQ(ParseAllocationWeight("off").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The squared output error of layer l converted by `m`, run by the
// distillation's forward on the captured source input.
double ConvertedLayerLoss(const ModelWeights& w, int l,
                          const LatentLayerMaps& m,
                          const testing::LayerCapture& cap) {
  const AttentionTensors t = ApplyLayerMaps(w, l, m);
  const DistillShape shape{
      64,     8,           static_cast<int>(m.k.size()), m.d_qk,
      m.d_vo, m.rope_dims, t.rope_inv_freq.data()};
  auto d = [](const std::vector<float>& f) {
    return std::vector<double>(f.begin(), f.end());
  };
  const LayerParams<double> p{d(t.q), d(t.k), d(t.v), d(t.o)};
  return LayerLoss(shape, p, cap.x.data(), cap.y.data(), cap.last_tokens);
}

TEST(RankAllocationTest, CurvesEqualTheConvertedLayersOutputError) {
  auto w = Load(Stories260kDir());
  ASSERT_TRUE(w);
  const std::vector<LayerStats> stats =
      testing::MomentsOrEmpty(*w, Stories260kDocs(0, 60));
  ASSERT_EQ(stats.size(), 5u);
  // One rotary pair per layer (pair 1), head size 8: 6 position-free
  // channels, 8 value dims.
  const std::vector<std::vector<int>> kept(5, std::vector<int>{1});
  auto full = CalibratedMaps(*w, stats, kept,
                             std::vector<LayerRanks>(5, LayerRanks{8, 8}),
                             ValueBasis::kOutputWeighted);
  ASSERT_TRUE(full.ok()) << full.status();
  const std::vector<std::vector<int32_t>> doc = Stories260kDocs(300, 1);
  ASSERT_EQ(doc.size(), 1u);
  auto curves = MeasureErrorCurves(*w, doc, {*full}, 1);
  ASSERT_TRUE(curves.ok()) << curves.status();
  ASSERT_EQ(curves->size(), 5u);
  for (int l : {0, 3}) {
    const LayerErrorCurves& c = (*curves)[l];
    ASSERT_EQ(c.key.size(), 1u);
    ASSERT_EQ(c.key[0].size(), 4u);
    ASSERT_EQ(c.value.size(), 9u);
    EXPECT_EQ(c.tokens, static_cast<int64_t>(doc[0].size()));
    const double scale = c.output_energy;
    ASSERT_GT(scale, 0);
    EXPECT_NEAR(c.value[0], scale, 1e-9 * scale);
    // Full-rank values are exact; full-rank keys still lose RoPE on 6 of
    // the 8 channels (checked against the converted layer below).
    EXPECT_LT(c.value.back(), 1e-12 * scale);
    EXPECT_GT(c.key[0].back(), 1e-6 * scale);
    testing::LayerCapture cap(l);
    ASSERT_TRUE(ObserveLayers(*w, doc, &cap).ok());
    // Each point against the converted layer at that rank.
    // (Value points with every pair rotary: the curve's exact keys.)
    auto check = [&](int d_qk, int d_vo, double curve) {
      const std::vector<std::vector<int>> pairs(
          5, d_vo == 8 && curve > 0 ? std::vector<int>{1}
                                    : std::vector<int>{0, 1, 2, 3});
      auto maps = CalibratedMaps(
          *w, stats, pairs, std::vector<LayerRanks>(5, LayerRanks{d_qk, d_vo}),
          ValueBasis::kOutputWeighted);
      ASSERT_TRUE(maps.ok()) << maps.status();
      EXPECT_NEAR(curve, ConvertedLayerLoss(*w, l, (*maps)[l], cap),
                  1e-5 * scale)
          << "layer " << l << " d_qk " << d_qk << " d_vo " << d_vo;
    };
    for (int i = 0; i < 4; ++i) check(2 + 2 * i, 8, c.key[0][i]);
    for (int v : {1, 3, 6, 7}) check(8, v, c.value[v]);
    check(8, 8, 0.0);
  }
}

// The same for cross-head maps (joint_latent.h): one latent KV head over
// the 4 source heads, 2 rotary dims kept per head (8 in all), up to 24
// position-free key dims and 32 value dims.
TEST(RankAllocationTest, CrossHeadCurvesEqualTheConvertedLayersOutputError) {
  auto w = Load(Stories260kDir());
  ASSERT_TRUE(w);
  const std::vector<LayerStats> stats =
      testing::MomentsOrEmpty(*w, Stories260kDocs(0, 60));
  ASSERT_EQ(stats.size(), 5u);
  const std::vector<int> one{1}, all{0, 1, 2, 3};
  const int l = 2;
  std::vector<LatentLayerMaps> layers;
  for (int i = 0; i < 5; ++i) {
    auto m = BuildJointLayerMaps(*w, i, stats[i], one, 32, 32);
    ASSERT_TRUE(m.ok()) << m.status();
    layers.push_back(std::move(*m));
  }
  const std::vector<std::vector<int32_t>> doc = Stories260kDocs(300, 1);
  ASSERT_EQ(doc.size(), 1u);
  auto curves = MeasureErrorCurves(*w, doc, {layers}, 1);
  ASSERT_TRUE(curves.ok()) << curves.status();
  const LayerErrorCurves& c = (*curves)[l];
  ASSERT_EQ(c.key.size(), 1u);
  ASSERT_EQ(c.key[0].size(), 13u);
  ASSERT_EQ(c.value.size(), 33u);
  const double scale = c.output_energy;
  ASSERT_GT(scale, 0);
  EXPECT_NEAR(c.value[0], scale, 1e-9 * scale);
  EXPECT_LT(c.value.back(), 1e-12 * scale);
  testing::LayerCapture cap(l);
  ASSERT_TRUE(ObserveLayers(*w, doc, &cap).ok());
  for (int i : {0, 1, 5, 12}) {
    auto m = BuildJointLayerMaps(*w, l, stats[l], one, 8 + 2 * i, 32);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_NEAR(c.key[0][i], ConvertedLayerLoss(*w, l, *m, cap), 1e-5 * scale)
        << "position-free key dims " << 2 * i;
  }
  // Value points with every pair rotary (exact keys).
  for (int v : {1, 7, 20, 31}) {
    auto m = BuildJointLayerMaps(*w, l, stats[l], all, 32, v);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_NEAR(c.value[v], ConvertedLayerLoss(*w, l, *m, cap), 1e-5 * scale)
        << "value dims " << v;
  }
  // Mixed per-head and cross-head candidates are refused.
  auto per_head =
      CalibratedMaps(*w, stats, std::vector<std::vector<int>>(5, one),
                     std::vector<LayerRanks>(5, LayerRanks{8, 8}),
                     ValueBasis::kOutputWeighted);
  ASSERT_TRUE(per_head.ok());
  EXPECT_EQ(MeasureErrorCurves(*w, doc, {layers, *per_head}, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RankAllocationTest, AllocatedConversionLoadsWithPerLayerDims) {
  KvLatentOptions o = PartialLatentOptions(100);
  o.allocate_ranks = true;
  o.allocation_tokens = 2000;
  const std::string out = NewDir("allocated");
  const absl::Status converted = ConvertKvLatent(Stories260kDir(), out, o);
  ASSERT_TRUE(converted.ok()) << converted;
  auto w = Load(out);
  ASSERT_TRUE(w);
  const ModelConfig& c = w->config;
  int64_t position_free_and_values = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    EXPECT_EQ(c.rope_dim(l), 2) << l;
    position_free_and_values += c.qk_head_dim[l] - 2 + c.vo_head_dim[l];
  }
  // The uniform budget: (6 - 2) + 4 per layer.
  EXPECT_LE(position_free_and_values, 5 * 8);
  auto ppl = Perplexity(*w, Stories260kDocs(400, 20));
  ASSERT_TRUE(ppl.ok()) << ppl.status();
  EXPECT_TRUE(std::isfinite(ppl->perplexity));
  // Without rope=, each layer's split is chosen among d_qk/2 rounded down
  // to even (2), 3/4 (4) and all (6) rotary dims, within d_qk + d_vo.
  o.rope_dims = -1;
  const std::string free_split = NewDir("allocated_split");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), free_split, o).ok());
  auto s = Load(free_split);
  ASSERT_TRUE(s);
  int64_t total = 0;
  for (int l = 0; l < s->config.num_layers; ++l) {
    const int rope = s->config.rope_dim(l);
    EXPECT_TRUE(rope == 2 || rope == 4 || rope == 6) << rope;
    EXPECT_EQ(s->layers[l].rope_inv_freq.size(), static_cast<size_t>(rope / 2));
    total += s->config.qk_head_dim[l] + s->config.vo_head_dim[l];
  }
  EXPECT_LE(total, 5 * 10);
  auto split_ppl = Perplexity(*s, Stories260kDocs(400, 20));
  ASSERT_TRUE(split_ppl.ok()) << split_ppl.status();
  EXPECT_TRUE(std::isfinite(split_ppl->perplexity));
  // Cross-head latents: one KV head, 4 x 2 rotary dims in every layer, the
  // 4 heads' bytes (4 x (6 + 4) dims per layer) shared out over the layers.
  o.rope_dims = 2;
  o.joint_heads = true;
  o.allocate_joint = true;
  const std::string joint = NewDir("allocated_joint");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), joint, o).ok());
  auto j = Load(joint);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->config.num_kv_heads, 1);
  int64_t joint_total = 0;
  bool varied = false;
  for (int l = 0; l < j->config.num_layers; ++l) {
    EXPECT_EQ(j->config.rope_dim(l), 8) << l;
    joint_total += j->config.qk_head_dim[l] + j->config.vo_head_dim[l];
    varied = varied || j->config.vo_head_dim[l] != j->config.vo_head_dim[0] ||
             j->config.qk_head_dim[l] != j->config.qk_head_dim[0];
  }
  EXPECT_LE(joint_total, 5 * 4 * 10);
  EXPECT_GT(joint_total, 5 * 4 * 10 - 10);
  EXPECT_TRUE(varied);
  auto joint_ppl = Perplexity(*j, Stories260kDocs(400, 20));
  ASSERT_TRUE(joint_ppl.ok()) << joint_ppl.status();
  EXPECT_TRUE(std::isfinite(joint_ppl->perplexity));
}

}  // namespace
}  // namespace latentkv::model::transform
