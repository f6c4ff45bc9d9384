// Local distillation: the layer's analytic gradient against central finite
// differences in float64 (every parameter matrix, partial rotary, GQA), the
// float32 path against the float64 one, and on the real stories260K model a
// short distillation that lowers each layer's training error and the
// held-out perplexity of the converted model.
#include "model/transform/distill.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "model/transform/calibration.h"
#include "model/transform/distill_layer.h"
#include "model/transform/forward.h"
#include "model/transform/kv_latent.h"
#include "model/transform/latent_maps.h"
#include "model/transform/test_util.h"
#include "model/weights.h"

namespace latentkv::model::transform {
namespace {

using testing::NewDir;
using testing::PartialLatentOptions;
using testing::Stories260kDir;
using testing::Stories260kDocs;

// hidden 6, 4 query heads on 2 KV heads, d_qk 6 of which 4 rotary, d_vo 3.
constexpr float kInv[2] = {0.9f, 0.07f};
const DistillShape kShape{6, 4, 2, 6, 3, 4, kInv};

template <typename T>
std::vector<T> Random(size_t n, std::mt19937* rng, double scale) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(nd(*rng));
  return v;
}

template <typename T>
LayerParams<T> RandomParams(std::mt19937* rng) {
  const DistillShape& s = kShape;
  return {Random<T>(s.heads * s.d_qk * s.hidden, rng, 0.6),
          Random<T>(s.kv_heads * s.d_qk * s.hidden, rng, 0.6),
          Random<T>(s.kv_heads * s.d_vo * s.hidden, rng, 0.6),
          Random<T>(s.hidden * s.heads * s.d_vo, rng, 0.6)};
}

TEST(DistillLayerTest, GradientMatchesFiniteDifferences) {
  std::mt19937 rng(3);
  const int64_t n = 7;
  LayerParams<double> p = RandomParams<double>(&rng);
  const std::vector<double> x = Random<double>(n * 6, &rng, 1.0);
  const std::vector<double> y = Random<double>(n * 6, &rng, 1.0);
  LayerParams<double> g{
      std::vector<double>(p.q.size()), std::vector<double>(p.k.size()),
      std::vector<double>(p.v.size()), std::vector<double>(p.o.size())};
  LayerLossAndGrad(kShape, p, x.data(), y.data(), n, &g);
  const double h = 1e-6;
  int checked = 0;
  for (auto [param, grad, name] :
       {std::tuple{&p.q, &g.q, "q"}, std::tuple{&p.k, &g.k, "k"},
        std::tuple{&p.v, &g.v, "v"}, std::tuple{&p.o, &g.o, "o"}}) {
    for (size_t i = 0; i < param->size(); ++i) {
      const double keep = (*param)[i];
      (*param)[i] = keep + h;
      const double up = LayerLoss(kShape, p, x.data(), y.data(), n);
      (*param)[i] = keep - h;
      const double down = LayerLoss(kShape, p, x.data(), y.data(), n);
      (*param)[i] = keep;
      const double fd = (up - down) / (2 * h);
      EXPECT_NEAR((*grad)[i], fd, 1e-5 * (1.0 + std::abs(fd)))
          << name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4 * 36 + 2 * 36 + 2 * 18 + 6 * 12);
}

TEST(DistillLayerTest, FloatPathAgreesWithDouble) {
  std::mt19937 rng(5);
  const int64_t n = 9;
  const LayerParams<double> pd = RandomParams<double>(&rng);
  const std::vector<double> xd = Random<double>(n * 6, &rng, 1.0);
  const std::vector<double> yd = Random<double>(n * 6, &rng, 1.0);
  auto to_f = [](const std::vector<double>& v) {
    return std::vector<float>(v.begin(), v.end());
  };
  const LayerParams<float> pf{to_f(pd.q), to_f(pd.k), to_f(pd.v), to_f(pd.o)};
  LayerParams<double> gd{
      std::vector<double>(pd.q.size()), std::vector<double>(pd.k.size()),
      std::vector<double>(pd.v.size()), std::vector<double>(pd.o.size())};
  LayerParams<float> gf{
      std::vector<float>(pd.q.size()), std::vector<float>(pd.k.size()),
      std::vector<float>(pd.v.size()), std::vector<float>(pd.o.size())};
  const double ld = LayerLossAndGrad(kShape, pd, xd.data(), yd.data(), n, &gd);
  const double lf =
      LayerLossAndGrad(kShape, pf, to_f(xd).data(), to_f(yd).data(), n, &gf);
  EXPECT_NEAR(lf, ld, 1e-4 * ld);
  for (size_t i = 0; i < gd.q.size(); ++i) {
    EXPECT_NEAR(gf.q[i], gd.q[i], 1e-3 * (1 + std::abs(gd.q[i])));
  }
}

TEST(DistillTest, ShortDistillationLowersErrorAndHeldOutPerplexity) {
  auto src = LoadModel(Stories260kDir());
  ASSERT_TRUE(src.ok());
  KvLatentOptions o = PartialLatentOptions(100);
  const std::string plain = NewDir("kvl_distill_plain");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), plain, o).ok());
  o.distill.tokens = 6000;
  o.distill.progress = false;
  o.distill_text.max_lines = 300;
  const std::string trained = NewDir("kvl_distill_trained");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), trained, o).ok());
  const auto held_out = Stories260kDocs(1000, 40);
  auto base = Perplexity(**src, held_out);
  auto a = LoadModel(plain);
  auto b = LoadModel(trained);
  ASSERT_TRUE(base.ok() && a.ok() && b.ok());
  auto pa = Perplexity(**a, held_out);
  auto pb = Perplexity(**b, held_out);
  ASSERT_TRUE(pa.ok() && pb.ok());
  std::printf(
      "held-out ppl: original %.3f; d_qk 6 (rope 2) d_vo 4: "
      "training-free %.3f, distilled (6000 tokens/layer) %.3f\n",
      base->perplexity, pa->perplexity, pb->perplexity);
  EXPECT_LT(pb->perplexity, pa->perplexity);
}

// A wall budget ends the run even when it is spent before the last layers
// (they keep their init), the capture bound leaves sequences out, and
// training never makes a layer worse on its training set.
TEST(DistillTest, WallBudgetEndsAndNeverHurts) {
  auto src = LoadModel(Stories260kDir());
  ASSERT_TRUE(src.ok());
  const auto docs = Stories260kDocs(0, 100);
  auto stats = Calibrate(**src, docs);
  ASSERT_TRUE(stats.ok());
  std::vector<std::vector<int>> kept(5, std::vector<int>{0});
  auto maps =
      CalibratedMaps(**src, *stats, kept, 6, 4, ValueBasis::kOutputWeighted);
  ASSERT_TRUE(maps.ok()) << maps.status();
  std::vector<AttentionTensors> tensors;
  for (int l = 0; l < 5; ++l)
    tensors.push_back(ApplyLayerMaps(**src, l, (*maps)[l]));
  DistillOptions d;
  d.minutes = 0.02;  // 1.2 s, capture included
  d.progress = false;
  d.max_capture_bytes = 1 << 20;  // one 256-token sequence of stories260K
  const auto t0 = std::chrono::steady_clock::now();
  auto r = DistillLayers(**src, docs, *maps, &tensors, d);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                .count(),
            30.0);
  ASSERT_EQ(r->loss_after.size(), 5u);
  EXPECT_GT(r->skipped_sequences, 0);
  EXPECT_LE(r->train_tokens, 256);
  for (int l = 0; l < 5; ++l) EXPECT_LE(r->loss_after[l], r->loss_before[l]);
}

TEST(DistillTest, RefusesWithoutABudget) {
  auto src = LoadModel(Stories260kDir());
  ASSERT_TRUE(src.ok());
  std::vector<LatentLayerMaps> maps(5);
  std::vector<AttentionTensors> t(5);
  auto r = DistillLayers(**src, {{1, 2, 3}}, maps, &t, DistillOptions{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace latentkv::model::transform
