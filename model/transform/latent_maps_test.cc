// Partial-rotary KV-Latent keys and the W_o refit on the real stories260K
// model (head size 8, 4 rotary pairs):
// - the whitened position-free maps are exact at full rank (the bilinear
//   form Q_h^T K_g is the logit scale times the identity on every source
//   channel) and, truncated, keep q_P.k_P better on held-out activations
//   than plain PCA of the keys at the same rank;
// - the rotation-aware score ranks a pair that never rotates last;
// - a converted model (rope < d_qk) writes rope_dims and a [rope/2] table,
//   loads, and the refit lowers held-out perplexity against the analytic
//   maps alone.
#include "model/transform/latent_maps.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/transform/calibration.h"
#include "model/transform/forward.h"
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

std::vector<LayerStats> Stats(const ModelWeights& w) {
  return testing::MomentsOrEmpty(w, Stories260kDocs(0, 60));
}

TEST(LatentMapsTest, FullRankMapsKeepEveryLogitShare) {
  auto w = Load(Stories260kDir());
  ASSERT_TRUE(w);
  const std::vector<LayerStats> stats = Stats(*w);
  ASSERT_EQ(stats.size(), 5u);
  for (int l = 0; l < 5; ++l) {
    LatentLayerMaps m;
    // One rotary pair kept (pair 2), the other 6 channels position-free at
    // full rank.
    ASSERT_TRUE(BuildKeyMaps(*w, l, stats[l], {2}, 8, &m).ok());
    EXPECT_EQ(m.rope_dims, 2);
    ASSERT_EQ(m.inv_freq.size(), 1u);
    EXPECT_EQ(m.inv_freq[0], w->layers[l].rope_inv_freq[2]);
    for (int h = 0; h < 8; ++h) {
      const std::vector<double>& q = m.q[h];
      const std::vector<double>& k = m.k[h / 2];
      for (int a = 0; a < 8; ++a) {
        for (int b = 0; b < 8; ++b) {
          double form = 0.0;  // (Q^T K)[a, b]
          for (int i = 0; i < 8; ++i) form += q[i * 8 + a] * k[i * 8 + b];
          EXPECT_NEAR(form, a == b ? 1.0 : 0.0, 1e-6)
              << "layer " << l << " head " << h << " [" << a << "," << b << "]";
        }
      }
    }
  }
}

TEST(LatentMapsTest, WhitenedTruncationBeatsKeyPcaOnHeldOutLogits) {
  auto w = Load(Stories260kDir());
  ASSERT_TRUE(w);
  const std::vector<LayerStats> stats = Stats(*w);
  const int layer = 2, n = 2;  // 6 free channels compressed to 2
  LatentLayerMaps m;
  ASSERT_TRUE(BuildKeyMaps(*w, layer, stats[layer], {0}, 2 + n, &m).ok());
  testing::LayerCapture cap(layer);
  ASSERT_TRUE(ObserveLayers(*w, Stories260kDocs(1000, 20), &cap).ok());
  const std::vector<int> free = {1, 2, 3, 5, 6, 7};
  // Plain PCA: top-n eigenvectors of the KV head's E[k_P k_P^T], same map
  // for q and k.
  double pca_err = 0.0, whitened_err = 0.0;
  const double scale = std::sqrt(4.0 / 8.0);
  for (int g = 0; g < 4; ++g) {
    std::vector<double> ck(36);
    for (int r = 0; r < 6; ++r) {
      for (int c = 0; c < 6; ++c) {
        ck[r * 6 + c] = stats[layer].k_moment[g][free[r] * 8 + free[c]];
      }
    }
    std::vector<double> u(36, 0.0);  // projector U U^T
    {
      // Power-free: the 6x6 eigenproblem via the maps' own solver would
      // not be independent; use Jacobi rotations here.
      std::vector<double> a = ck, v(36, 0.0);
      for (int i = 0; i < 6; ++i) v[i * 6 + i] = 1.0;
      for (int sweep = 0; sweep < 50; ++sweep) {
        for (int p = 0; p < 6; ++p) {
          for (int q2 = p + 1; q2 < 6; ++q2) {
            if (std::abs(a[p * 6 + q2]) < 1e-18) continue;
            const double th = 0.5 * std::atan2(2 * a[p * 6 + q2],
                                               a[q2 * 6 + q2] - a[p * 6 + p]);
            const double c = std::cos(th), s = std::sin(th);
            for (int i = 0; i < 6; ++i) {
              const double x = a[i * 6 + p], y = a[i * 6 + q2];
              a[i * 6 + p] = c * x - s * y;
              a[i * 6 + q2] = s * x + c * y;
            }
            for (int i = 0; i < 6; ++i) {
              const double x = a[p * 6 + i], y = a[q2 * 6 + i];
              a[p * 6 + i] = c * x - s * y;
              a[q2 * 6 + i] = s * x + c * y;
            }
            for (int i = 0; i < 6; ++i) {
              const double x = v[i * 6 + p], y = v[i * 6 + q2];
              v[i * 6 + p] = c * x - s * y;
              v[i * 6 + q2] = s * x + c * y;
            }
          }
        }
      }
      std::vector<int> order = {0, 1, 2, 3, 4, 5};
      std::sort(order.begin(), order.end(),
                [&](int x, int y) { return a[x * 6 + x] > a[y * 6 + y]; });
      for (int e = 0; e < n; ++e) {
        for (int r = 0; r < 6; ++r) {
          for (int c = 0; c < 6; ++c) {
            u[r * 6 + c] += v[r * 6 + order[e]] * v[c * 6 + order[e]];
          }
        }
      }
    }
    for (int h = 2 * g; h < 2 * g + 2; ++h) {
      for (int64_t t = 0; t < cap.tokens; t += 3) {
        const double* qt = &cap.q[(t * 8 + h) * 8];
        for (int64_t s = 0; s < cap.tokens; s += 5) {
          const double* ks = &cap.k[(s * 4 + g) * 8];
          double exact = 0.0, pca = 0.0, white = 0.0;
          for (int r = 0; r < 6; ++r) {
            exact += qt[free[r]] * ks[free[r]];
            for (int c = 0; c < 6; ++c) {
              pca += qt[free[r]] * u[r * 6 + c] * ks[free[c]];
            }
          }
          for (int i = 2; i < 2 + n; ++i) {
            double qi = 0.0, ki = 0.0;
            for (int j = 0; j < 8; ++j) {
              qi += m.q[h][i * 8 + j] * qt[j];
              ki += m.k[g][i * 8 + j] * ks[j];
            }
            white += qi * ki / scale;
          }
          pca_err += (exact - pca) * (exact - pca);
          whitened_err += (exact - white) * (exact - white);
        }
      }
    }
  }
  std::printf(
      "held-out q_P.k_P squared error, rank 2 of 6: whitened %.4g, "
      "key PCA %.4g\n",
      whitened_err, pca_err);
  EXPECT_LT(whitened_err, pca_err);
}

TEST(LatentMapsTest, RotationScoreRanksANonRotatingPairLast) {
  LayerStats s;
  s.d_qk = 8;
  s.num_heads = 2;
  s.num_kv_heads = 1;
  s.q_pair_abs = {1, 1, 1, 1, 1, 1, 1, 1};
  s.k_pair_abs = {1, 1, 1, 1};
  const std::vector<float> inv = {1.0f, 0.1f, 0.0f, 1e-4f};
  const std::vector<double> score = RotationPairScores(s, inv, 512);
  EXPECT_EQ(score[2], 0.0);
  EXPECT_GT(score[3], 0.0);
  EXPECT_LT(score[3], score[1]);
  EXPECT_EQ(TopPairs(score, 2), (std::vector<int>{0, 1}));
  // Equal rotation, larger magnitudes win.
  s.q_pair_abs[0] = s.q_pair_abs[4] = 0.1;
  EXPECT_EQ(TopPairs(RotationPairScores(s, {1.0f, 1.0f, 0.0f, 1.0f}, 64), 2),
            (std::vector<int>{1, 3}));
}

TEST(LatentMapsTest, PartialRotaryConversionLoadsAndTheRefitHelps) {
  auto src = Load(Stories260kDir());
  ASSERT_TRUE(src);
  KvLatentOptions o = PartialLatentOptions(200);
  const std::string refit = NewDir("kvl_partial_refit");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), refit, o).ok());
  o.refit_output = false;
  const std::string plain = NewDir("kvl_partial_plain");
  ASSERT_TRUE(ConvertKvLatent(Stories260kDir(), plain, o).ok());
  auto a = Load(refit);
  auto b = Load(plain);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->config.rope_dims, std::vector<int>(5, 2));
  EXPECT_EQ(a->config.qk_head_dim, std::vector<int>(5, 6));
  for (int l = 0; l < 5; ++l) {
    ASSERT_EQ(a->layers[l].rope_inv_freq.size(), 1u);
    EXPECT_EQ(a->layers[l].rope_inv_freq, b->layers[l].rope_inv_freq);
  }
  const auto held_out = Stories260kDocs(1000, 40);
  auto base = Perplexity(*src, held_out);
  auto ra = Perplexity(*a, held_out);
  auto rb = Perplexity(*b, held_out);
  ASSERT_TRUE(base.ok() && ra.ok() && rb.ok());
  std::printf(
      "held-out ppl: original %.3f, d_qk 6 (rope 2) d_vo 4: "
      "analytic maps %.3f, refit W_o %.3f\n",
      base->perplexity, rb->perplexity, ra->perplexity);
  EXPECT_LT(ra->perplexity, rb->perplexity);
  EXPECT_GT(ra->perplexity, base->perplexity * 0.999);
}

}  // namespace
}  // namespace latentkv::model::transform
