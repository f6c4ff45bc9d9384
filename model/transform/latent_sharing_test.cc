// The latent-sharing study on the real stories260K model:
// - its premise: the dropped eigenvalues of the weighted key spectrum are
//   the logit error of the whitened-SVD key maps (BuildKeyMaps), checked by
//   summing that error over every pair of calibration tokens;
// - its orderings: shared <= joint <= per head, for every key weight, and
//   so for the dims each needs; nothing is lost at full rank.
#include "model/transform/latent_sharing.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "model/transform/calibration.h"
#include "model/transform/eigen.h"
#include "model/transform/forward.h"
#include "model/transform/latent_maps.h"
#include "model/transform/test_util.h"

namespace latentkv::model::transform {
namespace {

using testing::Stories260kDir;
using testing::Stories260kDocs;
constexpr auto Load = testing::LoadOrNull;

TEST(LatentSharingTest, KeySpectrumTailIsTheWhitenedMapsLogitError) {
  auto w = Load(Stories260kDir());
  ASSERT_TRUE(w);
  const auto docs = Stories260kDocs(0, 12);
  const std::vector<LayerStats> stats = testing::MomentsOrEmpty(*w, docs);
  ASSERT_EQ(stats.size(), 5u);
  const int l = 2, g = 1;
  testing::LayerCapture cap(l);
  ASSERT_TRUE(ObserveLayers(*w, docs, &cap).ok());
  // Pair 1 keeps RoPE: channels 1 and 5; the other 6 are position-free.
  const std::vector<int> free = {0, 2, 3, 4, 6, 7};
  std::vector<double> cq(36), ck(36);
  for (int i = 0; i < 6; ++i) {
    for (int j = 0; j < 6; ++j) {
      cq[i * 6 + j] = stats[l].q_moment[g][free[i] * 8 + free[j]];
      ck[i * 6 + j] = stats[l].k_moment[g][free[i] * 8 + free[j]];
    }
  }
  auto roots = SymmetricSquareRoots(cq, 6);
  ASSERT_TRUE(roots.ok());
  auto spectrum = WeightedSpectrum(roots->sqrt, ck, 6);
  ASSERT_TRUE(spectrum.ok()) << spectrum.status();
  const std::vector<double> tail = Tails(*spectrum);
  for (int n : {1, 2, 4}) {
    LatentLayerMaps m;
    ASSERT_TRUE(BuildKeyMaps(*w, l, stats[l], {1}, 2 + n, &m).ok());
    const double fold = std::sqrt((2.0 + n) / 8.0);  // folded into Q
    // Mean over every (query token, key token) pair, summed over the two
    // query heads of KV head g, of the position-free logit share's error.
    double err = 0;
    for (int64_t t = 0; t < cap.tokens; ++t) {
      for (int h = 2 * g; h < 2 * g + 2; ++h) {
        const double* q = &cap.q[(t * 8 + h) * 8];
        double qn[8] = {0};
        for (int i = 0; i < n; ++i) {
          for (int c = 0; c < 8; ++c) qn[i] += m.q[h][(2 + i) * 8 + c] * q[c];
        }
        for (int64_t s = 0; s < cap.tokens; ++s) {
          const double* k = &cap.k[(s * 4 + g) * 8];
          double exact = 0, approx = 0;
          for (int p : free) exact += q[p] * k[p];
          for (int i = 0; i < n; ++i) {
            double kn = 0;
            for (int c = 0; c < 8; ++c) kn += m.k[g][(2 + i) * 8 + c] * k[c];
            approx += qn[i] * kn;
          }
          const double d = exact - approx / fold;
          err += d * d;
        }
      }
    }
    err /= static_cast<double>(cap.tokens) * cap.tokens;
    EXPECT_NEAR(err, tail[n], 1e-6 * tail[0]) << "rank " << n;
  }
}

TEST(LatentSharingTest, SharingNeverLosesAndFullRankLosesNothing) {
  auto w = Load(Stories260kDir());
  ASSERT_TRUE(w);
  const auto docs = Stories260kDocs(0, 40);
  const std::vector<LayerStats> stats = testing::MomentsOrEmpty(*w, docs);
  ASSERT_EQ(stats.size(), 5u);
  const std::vector<std::vector<int>> kept(5, std::vector<int>{1});
  SharingOptions o;
  o.d_qk = 4;
  o.d_vo = 4;
  auto r = StudyLatentSharing(*w, stats, kept, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 5 * o.alpha_scales.size());
  for (const SharingLayerResult& x : *r) {
    EXPECT_EQ(x.budget_dims, 4 * 6);
    EXPECT_EQ(x.rotary_dims, 4 * 2);
    const double slack = 1e-9 * x.total;
    EXPECT_GT(x.per_head.residual, 0);
    EXPECT_LE(x.per_head.residual, x.total + slack);
    EXPECT_LE(x.joint.residual, x.per_head.residual + slack);
    EXPECT_LE(x.shared.residual, x.joint.residual + slack);
    EXPECT_LE(x.joint.dims_to_match, x.budget_dims);
    EXPECT_LE(x.shared.dims_to_match, x.joint.dims_to_match);
  }
  o.d_qk = 8;
  o.d_vo = 8;
  auto full = StudyLatentSharing(*w, stats, kept, o);
  ASSERT_TRUE(full.ok()) << full.status();
  for (const SharingLayerResult& x : *full) {
    EXPECT_LT(x.per_head.residual, 1e-9 * x.total);
    EXPECT_LT(x.shared.residual, 1e-9 * x.total);
  }
}

}  // namespace
}  // namespace latentkv::model::transform
