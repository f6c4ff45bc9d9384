#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

// Float64 reference written from the definition, slot by slot.
std::vector<double> RefScores(const std::vector<float>& q,
                              const std::vector<int32_t>& q_pos, int group,
                              const std::vector<float>& k,
                              const std::vector<int32_t>& k_pos, int d,
                              double scale) {
  const int64_t n_w = q_pos.size(), n = k_pos.size();
  std::vector<double> out(group * n, 0.0);
  for (int64_t w = 0; w < n_w; ++w) {
    for (int g = 0; g < group; ++g) {
      std::vector<double> e(n, 0.0);
      double z = 0.0;
      for (int64_t s = 0; s < n; ++s) {
        if (k_pos[s] > q_pos[w]) continue;
        double dot = 0.0;
        for (int i = 0; i < d; ++i) {
          dot += double{q[(w * group + g) * d + i]} * k[s * d + i];
        }
        e[s] = std::exp(dot * scale);
        z += e[s];
      }
      for (int64_t s = 0; s < n; ++s) {
        if (z > 0) out[g * n + s] += e[s] / z;
      }
    }
  }
  return out;
}

TEST(WindowAttentionScoresTest, MatchesFloat64ReferenceOnAwkwardSizes) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  struct Case {
    int n_w, group, n, d;
  };
  for (const Case c : {Case{1, 1, 1, 2}, Case{5, 3, 97, 6}, Case{32, 2, 17, 12},
                       Case{7, 4, 200, 8}}) {
    std::vector<float> q(c.n_w * c.group * c.d), k(c.n * c.d);
    for (float& x : q) x = nd(rng);
    for (float& x : k) x = nd(rng);
    // Sparse, shuffled-looking but ascending key positions (as after
    // eviction); window queries at the last positions.
    std::vector<int32_t> k_pos(c.n), q_pos(c.n_w);
    int32_t p = 0;
    for (int s = 0; s < c.n; ++s) k_pos[s] = (p += 1 + (s * 7) % 3);
    for (int w = 0; w < c.n_w; ++w) q_pos[w] = p - (c.n_w - 1 - w) * 2;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    std::vector<float> got(c.group * c.n);
    WindowAttentionScores(q.data(), q_pos.data(), c.n_w, c.group, k.data(),
                          k_pos.data(), c.n, c.d, scale, got.data());
    const std::vector<double> want =
        RefScores(q, q_pos, c.group, k, k_pos, c.d, scale);
    double total = 0.0;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(got[i], want[i], 1e-5 * (1.0 + want[i])) << i;
      total += got[i];
    }
    // Every (window row, head) with a visible slot contributes mass 1.
    int rows_with_mass = 0;
    for (int w = 0; w < c.n_w; ++w) {
      rows_with_mass += q_pos[w] >= k_pos[0] ? c.group : 0;
    }
    EXPECT_NEAR(total, rows_with_mass, 1e-4);
  }
}

}  // namespace
}  // namespace latentkv::kernels
