// SnapKV window attention scores (see kernels/ops.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/dtype.h"
#include "kernels/ops.h"

namespace latentkv::kernels {

void WindowAttentionScores(const float* q, const int32_t* q_pos, int64_t n_w,
                           int32_t group, const float* k, const int32_t* k_pos,
                           int64_t n, int32_t d_qk, float scale,
                           float* scores) {
  std::vector<double> acc(static_cast<size_t>(group) * n, 0.0);
  std::vector<double> logit(n);
  for (int64_t w = 0; w < n_w; ++w) {
    for (int32_t g = 0; g < group; ++g) {
      const float* qr = q + (w * group + g) * d_qk;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t s = 0; s < n; ++s) {
        if (k_pos[s] > q_pos[w]) continue;
        const float* kr = k + s * d_qk;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int32_t i = 0; i < d_qk; ++i) dot += qr[i] * kr[i];
        logit[s] = static_cast<double>(dot) * scale;
        mx = std::max(mx, logit[s]);
      }
      if (mx == -std::numeric_limits<double>::infinity()) continue;
      double sum = 0.0;
      for (int64_t s = 0; s < n; ++s) {
        if (k_pos[s] > q_pos[w]) continue;
        logit[s] = std::exp(logit[s] - mx);
        sum += logit[s];
      }
      double* a = acc.data() + static_cast<int64_t>(g) * n;
      for (int64_t s = 0; s < n; ++s) {
        if (k_pos[s] <= q_pos[w]) a[s] += logit[s] / sum;
      }
    }
  }
  for (size_t i = 0; i < acc.size(); ++i) {
    scores[i] = static_cast<float>(acc[i]);
  }
}

void WindowScoresFromPool(const KvPoolView& pool, int32_t head,
                          const int64_t* slots, int64_t n, const float* q,
                          const int32_t* q_pos, int64_t n_w, int32_t group,
                          float scale, float* scores, int32_t* k_pos) {
  const int32_t d = pool.d_qk;
  const int64_t row = int64_t{DTypeSize(pool.dtype)} * d;
  const float k_scale = pool.k_scale == nullptr ? 1.0f : pool.k_scale[head];
  std::vector<float> keys(static_cast<size_t>(n) * d);
  for (int64_t i = 0; i < n; ++i) {
    KvToF32(static_cast<const char*>(pool.k) + slots[i] * row, pool.dtype, d,
            k_scale, keys.data() + i * d);
    k_pos[i] = pool.pos[slots[i]];
  }
  WindowAttentionScores(q, q_pos, n_w, group, keys.data(), k_pos, n, d, scale,
                        scores);
}

}  // namespace latentkv::kernels
