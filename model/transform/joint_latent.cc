#include "model/transform/joint_latent.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/transform/eigen.h"
#include "model/transform/forward.h"

namespace latentkv::model::transform {
namespace {

using Vec = std::vector<double>;

class JointMoments : public LayerObserver {
 public:
  explicit JointMoments(const ModelConfig& c) : c_(c), sums_(c.num_layers) {}

  void Observe(const LayerActivations& a) override {
    const int l = a.layer, nkv = c_.num_kv_heads;
    const int kd = nkv * c_.qk_head_dim[l], vd = nkv * c_.vo_head_dim[l];
    const int dim = kd + vd;
    Vec x(static_cast<size_t>(a.tokens) * dim);
    for (int64_t t = 0; t < a.tokens; ++t) {
      std::copy(a.k + t * kd, a.k + (t + 1) * kd, &x[t * dim]);
      std::copy(a.v + t * vd, a.v + (t + 1) * vd, &x[t * dim + kd]);
    }
    Vec& s = sums_[l];
    s.resize(static_cast<size_t>(dim) * dim, 0.0);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim,
                static_cast<int>(a.tokens), 1.0, x.data(), dim, x.data(), dim,
                1.0, s.data(), dim);
    if (l == 0) tokens_ += a.tokens;
  }

  std::vector<Vec> Means() && {
    for (Vec& s : sums_) {
      for (double& x : s) x /= static_cast<double>(tokens_);
    }
    return std::move(sums_);
  }

 private:
  const ModelConfig& c_;
  std::vector<Vec> sums_;
  int64_t tokens_ = 0;
};

Vec Sub(const Vec& a, int n, const std::vector<int>& idx) {
  Vec out(idx.size() * idx.size());
  for (size_t i = 0; i < idx.size(); ++i) {
    for (size_t j = 0; j < idx.size(); ++j) {
      out[i * idx.size() + j] = a[static_cast<size_t>(idx[i]) * n + idx[j]];
    }
  }
  return out;
}

// Columns of the top-k eigenvectors of `m` [n, n] as rows: [k, n].
absl::StatusOr<Vec> TopRows(const Vec& m, int n, int k) {
  auto e = TopEigenSymmetric(m, n, k);
  if (!e.ok()) return e.status();
  Vec vt(static_cast<size_t>(k) * n);
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j < n; ++j) {
      vt[static_cast<size_t>(i) * n + j] =
          e->vectors[static_cast<size_t>(j) * k + i];
    }
  }
  return vt;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<double>>> JointKvMoments(
    const ModelWeights& w, absl::Span<const std::vector<int32_t>> docs) {
  JointMoments moments(w.config);
  absl::Status s = ObserveLayers(w, docs, &moments);
  if (!s.ok()) return s;
  return std::move(moments).Means();
}

absl::StatusOr<LatentLayerMaps> BuildJointLayerMaps(
    const ModelWeights& w, int layer, const LayerStats& stats,
    const std::vector<double>& moment, const std::vector<int>& kept, int d_qk,
    int d_vo) {
  const ModelConfig& c = w.config;
  const int nkv = c.num_kv_heads, nh = c.num_heads, group = nh / nkv;
  const int hs = c.qk_head_dim[layer], hv = c.vo_head_dim[layer];
  const int half = hs / 2, r = static_cast<int>(kept.size());
  const int rope = nkv * 2 * r, n = d_qk - rope;
  std::vector<int> free;
  for (int j = 0; j < half; ++j) {
    if (!std::binary_search(kept.begin(), kept.end(), j)) {
      free.push_back(j);
      free.push_back(j + half);
    }
  }
  std::sort(free.begin(), free.end());
  const int m = static_cast<int>(free.size()), km = nkv * m, vm = nkv * hv;
  const int dim = nkv * (hs + hv);
  if (n < 0 || n > km || n % 2 != 0 || d_vo < 1 || d_vo > vm ||
      moment.size() != static_cast<size_t>(dim) * dim ||
      stats.q_moment.size() != static_cast<size_t>(nkv)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cross-head kv-latent: layer ", layer, ": d_qk ", d_qk, " with ", rope,
        " rotary dims leaves ", n, " position-free dims (at most ", km,
        ", even), d_vo ", d_vo, " (at most ", vm, ")"));
  }
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
      for (int p : free) kidx.push_back(g * hs + p);
    }
    const Vec ck = Sub(moment, dim, kidx);
    Vec cq(static_cast<size_t>(km) * km, 0.0);
    for (int g = 0; g < nkv; ++g) {
      const Vec block = Sub(stats.q_moment[g], hs, free);
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < m; ++j) {
          cq[static_cast<size_t>(g * m + i) * km + g * m + j] =
              block[i * m + j];
        }
      }
    }
    auto roots = SymmetricSquareRoots(ck, km, 1e-10);
    if (!roots.ok()) return roots.status();
    auto vt = TopRows(DenseProduct(DenseProduct(roots->sqrt, cq, km, km, km),
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
    for (int i = 0; i < r; ++i) {
      const int lo = g * r + i, hi = pairs + g * r + i;
      k[static_cast<size_t>(lo) * kw + g * hs + kept[i]] = 1.0;
      k[static_cast<size_t>(hi) * kw + g * hs + kept[i] + half] = 1.0;
      for (int h = g * group; h < (g + 1) * group; ++h) {
        maps.q[h][static_cast<size_t>(lo) * hs + kept[i]] = scale;
        maps.q[h][static_cast<size_t>(hi) * hs + kept[i] + half] = scale;
      }
    }
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < m; ++j) {
        const size_t at = static_cast<size_t>(i) * km + g * m + j;
        k[static_cast<size_t>(rope + i) * kw + g * hs + free[j]] = a[at];
        for (int h = g * group; h < (g + 1) * group; ++h) {
          maps.q[h][static_cast<size_t>(rope + i) * hs + free[j]] =
              scale * b[at];
        }
      }
    }
  }
  // Joint values in the block-diagonal output metric S.
  Vec sm(static_cast<size_t>(vm) * vm, 0.0);
  const float* o = w.layers[layer].o_proj.f32();
  const int64_t cols = int64_t{nh} * hv;
  for (int h = 0; h < nh; ++h) {
    const int at = (h / group) * hv;
    for (int64_t row = 0; row < c.hidden_size; ++row) {
      const float* x = o + row * cols + int64_t{h} * hv;
      for (int i = 0; i < hv; ++i) {
        for (int e = 0; e < hv; ++e) {
          sm[static_cast<size_t>(at + i) * vm + at + e] += x[i] * x[e];
        }
      }
    }
  }
  std::vector<int> vidx(vm);
  for (int i = 0; i < vm; ++i) vidx[i] = nkv * hs + i;
  auto roots = SymmetricSquareRoots(sm, vm);
  if (!roots.ok()) return roots.status();
  auto vt =
      TopRows(DenseProduct(
                  DenseProduct(roots->sqrt, Sub(moment, dim, vidx), vm, vm, vm),
                  roots->sqrt, vm, vm, vm),
              vm, d_vo);
  if (!vt.ok()) return vt.status();
  maps.v.assign(1, DenseProduct(*vt, roots->sqrt, d_vo, vm, vm));  // V^T S^½
  // B = S^-1/2 V [vm, d_vo]; query head h reads its KV head's rows.
  Vec bt = DenseProduct(*vt, roots->inv_sqrt, d_vo, vm, vm);  // B^T
  maps.o.assign(nh, Vec(static_cast<size_t>(hv) * d_vo, 0.0));
  for (int h = 0; h < nh; ++h) {
    const int at = (h / group) * hv;
    for (int i = 0; i < hv; ++i) {
      for (int col = 0; col < d_vo; ++col) {
        maps.o[h][static_cast<size_t>(i) * d_vo + col] =
            bt[static_cast<size_t>(col) * vm + at + i];
      }
    }
  }
  return maps;
}

}  // namespace latentkv::model::transform
