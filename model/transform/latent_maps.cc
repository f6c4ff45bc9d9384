#include "model/transform/latent_maps.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/transform/eigen.h"

namespace latentkv::model::transform {
namespace {

// Rows of `maps` [heads][rows, hs] applied to each head's rows of `src`
// [heads * hs, cols] -> [heads * rows, cols].
std::vector<float> MapRows(const float* src, int64_t cols, int hs,
                           const std::vector<std::vector<double>>& maps,
                           int rows) {
  std::vector<float> out(maps.size() * rows * cols);
  std::vector<double> acc(cols);
  for (size_t h = 0; h < maps.size(); ++h) {
    for (int i = 0; i < rows; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int j = 0; j < hs; ++j) {
        const double m = maps[h][static_cast<size_t>(i) * hs + j];
        if (m == 0.0) continue;
        const float* row = src + (static_cast<int64_t>(h) * hs + j) * cols;
        for (int64_t c = 0; c < cols; ++c) acc[c] += m * row[c];
      }
      float* dst = out.data() + (h * rows + i) * cols;
      for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<float>(acc[c]);
    }
  }
  return out;
}

}  // namespace

std::vector<double> RotationPairScores(const LayerStats& s,
                                       const std::vector<float>& inv_freq,
                                       int max_distance) {
  const int half = s.d_qk / 2, group = s.num_heads / s.num_kv_heads;
  const int dmax = std::max(1, max_distance);
  std::vector<double> score(half, 0.0);
  for (int j = 0; j < half; ++j) {
    double rot = 0.0;
    for (int d = 1; d <= dmax; ++d) {
      const double x = std::sin(0.5 * static_cast<double>(inv_freq[j]) * d);
      rot += x * x;
    }
    rot /= dmax;
    for (int h = 0; h < s.num_heads; ++h) {
      score[j] += s.q_pair_abs[h * half + j] *
                  s.k_pair_abs[(h / group) * half + j] * rot;
    }
  }
  return score;
}

std::vector<int> TopPairs(const std::vector<double>& scores, int count) {
  std::vector<int> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return scores[a] > scores[b]; });
  order.resize(std::clamp<size_t>(count, 0, order.size()));
  std::sort(order.begin(), order.end());
  return order;
}

absl::Status BuildKeyMaps(const ModelWeights& w, int layer, const LayerStats& s,
                          const std::vector<int>& kept, int d_qk,
                          LatentLayerMaps* maps) {
  const ModelConfig& c = w.config;
  const int hs = c.qk_head_dim[layer], half = hs / 2;
  const int r = static_cast<int>(kept.size()), rope = 2 * r, n = d_qk - rope;
  for (size_t i = 0; i < kept.size(); ++i) {
    const int j = kept[i];
    if (j < 0 || j >= half || (i > 0 && j <= kept[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", layer,
                       ": kept rotary pairs must be distinct, ascending "
                       "and below ",
                       half, "; got ", j, " at ", i));
    }
  }
  const std::vector<int> free = PositionFreeChannels(kept, hs);  // P
  const int m = static_cast<int>(free.size());
  if (n < 0 || n > m || d_qk <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, ": d_qk ", d_qk, " with ", rope,
                     " rotary dims leaves ", n, " position-free dims; at most ",
                     m, " source channels are position-free"));
  }
  if (n > 0 && (s.k_moment.size() != static_cast<size_t>(c.num_kv_heads) ||
                s.q_moment.size() != static_cast<size_t>(c.num_kv_heads))) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, ": key/query moments missing"));
  }
  const double scale = std::sqrt(static_cast<double>(d_qk) / hs);
  const int group = c.num_heads / c.num_kv_heads;
  maps->d_qk = d_qk;
  maps->rope_dims = rope;
  maps->inv_freq.resize(r);
  for (int i = 0; i < r; ++i) {
    maps->inv_freq[i] = w.layers[layer].rope_inv_freq[kept[i]];
  }
  const size_t size = static_cast<size_t>(d_qk) * hs;
  maps->k.assign(c.num_kv_heads, std::vector<double>(size, 0.0));
  maps->q.assign(c.num_heads, std::vector<double>(size, 0.0));
  for (int g = 0; g < c.num_kv_heads; ++g) {
    std::vector<double> a, b;  // [n, m]
    if (n > 0) {
      const std::vector<double> ck = SquareSubmatrix(s.k_moment[g], hs, free);
      const std::vector<double> cq = SquareSubmatrix(s.q_moment[g], hs, free);
      auto roots = SymmetricSquareRoots(ck, m, 1e-10);
      if (!roots.ok()) return roots.status();
      const std::vector<double> mm = DenseProduct(
          DenseProduct(roots->sqrt, cq, m, m, m), roots->sqrt, m, m, m);
      auto rows = TopEigenRows(mm, m, n);  // V_n^T
      if (!rows.ok()) return rows.status();
      const std::vector<double>& vt = *rows;
      a = DenseProduct(vt, roots->inv_sqrt, n, m, m);
      b = DenseProduct(vt, roots->sqrt, n, m, m);
    }
    auto fill = [&](std::vector<double>& map, const std::vector<double>& nope,
                    double f) {
      for (int i = 0; i < r; ++i) {
        map[static_cast<size_t>(i) * hs + kept[i]] = f;
        map[static_cast<size_t>(i + r) * hs + kept[i] + half] = f;
      }
      for (int i = 0; i < n; ++i) {
        for (int j = 0; j < m; ++j) {
          map[static_cast<size_t>(rope + i) * hs + free[j]] =
              f * nope[static_cast<size_t>(i) * m + j];
        }
      }
    };
    fill(maps->k[g], a, 1.0);
    for (int h = g * group; h < (g + 1) * group; ++h)
      fill(maps->q[h], b, scale);
  }
  return absl::OkStatus();
}

std::vector<int> PositionFreeChannels(const std::vector<int>& kept, int hs) {
  const int half = hs / 2;
  std::vector<int> free;
  for (int j = 0; j < half; ++j) {
    if (!std::binary_search(kept.begin(), kept.end(), j)) free.push_back(j);
  }
  const size_t pairs = free.size();
  for (size_t i = 0; i < pairs; ++i) free.push_back(free[i] + half);
  return free;
}

std::vector<double> OutputMetric(const ModelWeights& w, int layer,
                                 int first_head, int heads) {
  const ModelConfig& c = w.config;
  const int hv = c.vo_head_dim[layer];
  const int64_t cols = int64_t{c.num_heads} * hv;
  const float* o = w.layers[layer].o_proj.f32();
  std::vector<double> s(static_cast<size_t>(hv) * hv, 0.0);
  for (int h = first_head; h < first_head + heads; ++h) {
    for (int64_t r = 0; r < c.hidden_size; ++r) {
      const float* row = o + r * cols + int64_t{h} * hv;
      for (int i = 0; i < hv; ++i) {
        for (int e = 0; e < hv; ++e) s[i * hv + e] += row[i] * row[e];
      }
    }
  }
  return s;
}

std::vector<double> MapHeads(const double* in, int64_t n, int in_heads, int hs,
                             const std::vector<std::vector<double>>& maps,
                             int rows) {
  const int heads = static_cast<int>(maps.size());
  std::vector<double> out(static_cast<size_t>(n) * heads * rows, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int h = 0; h < heads; ++h) {
      const double* x = in + (t * in_heads + h * in_heads / heads) * hs;
      double* y = &out[(t * heads + h) * rows];
      for (int i = 0; i < rows; ++i) {
        const double* m = &maps[h][static_cast<size_t>(i) * hs];
        double acc = 0.0;
        for (int j = 0; j < hs; ++j) acc += m[j] * x[j];
        y[i] = acc;
      }
    }
  }
  return out;
}

AttentionTensors ApplyLayerMaps(const ModelWeights& w, int layer,
                                const LatentLayerMaps& maps) {
  const ModelConfig& c = w.config;
  const LayerWeights& lw = w.layers[layer];
  const int64_t h = c.hidden_size;
  const int hq = c.qk_head_dim[layer], hv = c.vo_head_dim[layer];
  AttentionTensors a;
  // A new KV head may read several source heads (joint_latent.h).
  const int kv_span = c.num_kv_heads / static_cast<int>(maps.k.size());
  a.q = MapRows(lw.q_proj.f32(), h, hq, maps.q, maps.d_qk);
  a.k = MapRows(lw.k_proj.f32(), h, hq * kv_span, maps.k, maps.d_qk);
  a.v = MapRows(lw.v_proj.f32(), h, hv * kv_span, maps.v, maps.d_vo);
  const float* o = lw.o_proj.f32();
  const int nh = c.num_heads, dvo = maps.d_vo;
  const int64_t old_cols = int64_t{nh} * hv, new_cols = int64_t{nh} * dvo;
  a.o.assign(static_cast<size_t>(h * new_cols), 0.0f);
  for (int64_t row = 0; row < h; ++row) {
    for (int head = 0; head < nh; ++head) {
      const float* src = o + row * old_cols + int64_t{head} * hv;
      const std::vector<double>& om = maps.o[head];
      for (int cidx = 0; cidx < dvo; ++cidx) {
        double acc = 0.0;
        for (int i = 0; i < hv; ++i) {
          acc += src[i] * om[static_cast<size_t>(i) * dvo + cidx];
        }
        a.o[row * new_cols + int64_t{head} * dvo + cidx] =
            static_cast<float>(acc);
      }
    }
  }
  a.rope_inv_freq = maps.inv_freq;
  return a;
}

}  // namespace latentkv::model::transform
