#include "model/transform/joint_latent.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/transform/eigen.h"

namespace latentkv::model::transform {

using Vec = std::vector<double>;

namespace {

// One latent KV head over source KV heads [first, first + nkv) (the rest of
// the layer's query heads untouched): k, v maps [1]; q, o maps for every
// query head, zero outside the group's.
absl::StatusOr<LatentLayerMaps> BuildGroupMaps(const ModelWeights& w, int layer,
                                               const LayerStats& stats,
                                               const std::vector<int>& kept,
                                               int d_qk, int d_vo, int first,
                                               int nkv) {
  const ModelConfig& c = w.config;
  const int all = c.num_kv_heads, nh = c.num_heads, group = nh / all;
  const int hs = c.qk_head_dim[layer], hv = c.vo_head_dim[layer];
  const int half = hs / 2, r = static_cast<int>(kept.size());
  const int rope = nkv * 2 * r, n = d_qk - rope;
  const std::vector<int> free = PositionFreeChannels(kept, hs);
  const int m = static_cast<int>(free.size()), km = nkv * m, vm = nkv * hv;
  const int dim = all * (hs + hv);
  if (n < 0 || n > km || n % 2 != 0 || d_vo < 1 || d_vo > vm ||
      stats.kv_moment.size() != static_cast<size_t>(dim) * dim ||
      stats.q_moment.size() != static_cast<size_t>(all)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cross-head kv-latent: layer ", layer, ": d_qk ", d_qk, " with ", rope,
        " rotary dims leaves ", n, " position-free dims (at most ", km,
        ", even), d_vo ", d_vo, " (at most ", vm, "), joint moment of ", dim,
        " dims"));
  }
  const Vec& moment = stats.kv_moment;
  LatentLayerMaps maps;
  maps.d_qk = d_qk;
  maps.d_vo = d_vo;
  maps.rope_dims = rope;
  const int pairs = nkv * r;  // new rotary pairs
  maps.inv_freq.resize(pairs);
  for (int g = 0; g < nkv; ++g) {
    for (int i = 0; i < r; ++i) {
      maps.inv_freq[g * r + i] = w.layers[layer].rope_inv_freq[kept[i]];
    }
  }
  // Joint position-free keys: whitened SVD over every head's P channels.
  Vec a, b;  // [n, km]
  if (n > 0) {
    std::vector<int> kidx;
    for (int g = 0; g < nkv; ++g) {
      for (int p : free) kidx.push_back((first + g) * hs + p);
    }
    const Vec ck = SquareSubmatrix(moment, dim, kidx);
    Vec cq(static_cast<size_t>(km) * km, 0.0);
    for (int g = 0; g < nkv; ++g) {
      PutDiagonalBlock(SquareSubmatrix(stats.q_moment[first + g], hs, free), m,
                       g * m, km, &cq);
    }
    auto roots = SymmetricSquareRoots(ck, km, 1e-10);
    if (!roots.ok()) return roots.status();
    auto vt =
        TopEigenRows(DenseProduct(DenseProduct(roots->sqrt, cq, km, km, km),
                                  roots->sqrt, km, km, km),
                     km, n);
    if (!vt.ok()) return vt.status();
    a = DenseProduct(*vt, roots->inv_sqrt, n, km, km);
    b = DenseProduct(*vt, roots->sqrt, n, km, km);
  }
  const double scale = std::sqrt(static_cast<double>(d_qk) / hs);
  maps.k.assign(1, Vec(static_cast<size_t>(d_qk) * nkv * hs, 0.0));
  maps.q.assign(nh, Vec(static_cast<size_t>(d_qk) * hs, 0.0));
  Vec& k = maps.k[0];
  const int kw = nkv * hs;
  for (int g = 0; g < nkv; ++g) {
    const int h0 = (first + g) * group;
    for (int i = 0; i < r; ++i) {
      const int lo = g * r + i, hi = pairs + g * r + i;
      k[static_cast<size_t>(lo) * kw + g * hs + kept[i]] = 1.0;
      k[static_cast<size_t>(hi) * kw + g * hs + kept[i] + half] = 1.0;
      for (int h = h0; h < h0 + group; ++h) {
        maps.q[h][static_cast<size_t>(lo) * hs + kept[i]] = scale;
        maps.q[h][static_cast<size_t>(hi) * hs + kept[i] + half] = scale;
      }
    }
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < m; ++j) {
        const size_t at = static_cast<size_t>(i) * km + g * m + j;
        k[static_cast<size_t>(rope + i) * kw + g * hs + free[j]] = a[at];
        for (int h = h0; h < h0 + group; ++h) {
          maps.q[h][static_cast<size_t>(rope + i) * hs + free[j]] =
              scale * b[at];
        }
      }
    }
  }
  // Joint values in the block-diagonal output metric S.
  Vec sm(static_cast<size_t>(vm) * vm, 0.0);
  for (int g = 0; g < nkv; ++g) {
    PutDiagonalBlock(OutputMetric(w, layer, (first + g) * group, group), hv,
                     g * hv, vm, &sm);
  }
  std::vector<int> vidx(vm);
  for (int i = 0; i < vm; ++i) vidx[i] = all * hs + first * hv + i;
  auto roots = SymmetricSquareRoots(sm, vm);
  if (!roots.ok()) return roots.status();
  auto vt = TopEigenRows(
      DenseProduct(DenseProduct(roots->sqrt, SquareSubmatrix(moment, dim, vidx),
                                vm, vm, vm),
                   roots->sqrt, vm, vm, vm),
      vm, d_vo);
  if (!vt.ok()) return vt.status();
  maps.v.assign(1, DenseProduct(*vt, roots->sqrt, d_vo, vm, vm));  // V^T S^½
  // B = S^-1/2 V [vm, d_vo]; query head h reads its KV head's rows.
  Vec bt = DenseProduct(*vt, roots->inv_sqrt, d_vo, vm, vm);  // B^T
  maps.o.assign(nh, Vec(static_cast<size_t>(hv) * d_vo, 0.0));
  for (int h = first * group; h < (first + nkv) * group; ++h) {
    const int at = (h / group - first) * hv;
    for (int i = 0; i < hv; ++i) {
      for (int col = 0; col < d_vo; ++col) {
        maps.o[h][static_cast<size_t>(i) * d_vo + col] =
            bt[static_cast<size_t>(col) * vm + at + i];
      }
    }
  }
  return maps;
}

}  // namespace

absl::StatusOr<LatentLayerMaps> BuildJointLayerMaps(
    const ModelWeights& w, int layer, const LayerStats& stats,
    const std::vector<int>& kept, int d_qk, int d_vo, int heads_per_latent) {
  const int all = w.config.num_kv_heads;
  const int span = heads_per_latent == 0 ? all : heads_per_latent;
  if (span < 1 || all % span != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cross-head kv-latent: ", heads_per_latent,
                     " KV heads per latent do not divide the model's ", all));
  }
  const int group = w.config.num_heads / all;
  LatentLayerMaps out;
  for (int first = 0; first < all; first += span) {
    auto m = BuildGroupMaps(w, layer, stats, kept, d_qk, d_vo, first, span);
    if (!m.ok()) return m.status();
    if (first == 0) {
      out = std::move(*m);
      continue;
    }
    out.k.push_back(std::move(m->k[0]));
    out.v.push_back(std::move(m->v[0]));
    for (int h = first * group; h < (first + span) * group; ++h) {
      out.q[h] = std::move(m->q[h]);
      out.o[h] = std::move(m->o[h]);
    }
  }
  return out;
}

}  // namespace latentkv::model::transform
