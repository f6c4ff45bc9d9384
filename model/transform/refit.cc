#include "model/transform/refit.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "model/transform/eigen.h"
#include "model/transform/forward.h"

namespace latentkv::model::transform {
namespace {

class RefitObserver : public LayerObserver {
 public:
  RefitObserver(const ModelWeights& w, const std::vector<LatentLayerMaps>& maps)
      : w_(w), maps_(maps), layers_(maps.size()) {
    const ModelConfig& c = w.config;
    for (size_t l = 0; l < maps.size(); ++l) {
      Layer& ly = layers_[l];
      ly.dim = c.num_heads * maps[l].d_vo;
      ly.g.assign(static_cast<size_t>(ly.dim) * ly.dim, 0.0);
      ly.r.assign(static_cast<size_t>(c.hidden_size) * ly.dim, 0.0);
    }
  }

  void Observe(const LayerActivations& a) override {
    const ModelConfig& c = w_.config;
    const LatentLayerMaps& m = maps_[a.layer];
    Layer& ly = layers_[a.layer];
    const int64_t n = a.tokens;
    const int nh = c.num_heads, nkv = c.num_kv_heads;
    const int hq = c.qk_head_dim[a.layer], hv = c.vo_head_dim[a.layer];
    const int d = m.d_qk, dvo = m.d_vo;
    const int64_t hidden = c.hidden_size;
    const double* y = a.output;  // the source layer's W_o z [T, hidden]
    // The converted layer's z' [T, H * d_vo].
    std::vector<double> q = MapHeads(a.q, n, nh, hq, m.q, d);
    // New KV heads (fewer than the source's when joint_latent.h's maps read
    // several source heads each).
    const int kh = static_cast<int>(m.k.size()), span = nkv / kh;
    std::vector<double> k = MapHeads(a.k, n, kh, hq * span, m.k, d);
    const std::vector<double> v = MapHeads(a.v, n, kh, hv * span, m.v, dvo);
    ReferenceRope(&q, n, nh, d, m.rope_dims, m.inv_freq.data());
    ReferenceRope(&k, n, kh, d, m.rope_dims, m.inv_freq.data());
    const int dim = ly.dim;
    std::vector<double> zp(static_cast<size_t>(n) * dim);
    ReferenceCausalAttention(q.data(), k.data(), v.data(), n, nh, kh, d, dvo,
                             1.0 / std::sqrt(static_cast<double>(d)), zp.data(),
                             nullptr);
    // G += z'^T z', R += y^T z'.
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim,
                static_cast<int>(n), 1.0, zp.data(), dim, zp.data(), dim, 1.0,
                ly.g.data(), dim);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans,
                static_cast<int>(hidden), dim, static_cast<int>(n), 1.0, y,
                static_cast<int>(hidden), zp.data(), dim, 1.0, ly.r.data(),
                dim);
  }

  // Solves layer l's ridge problem into a->o.
  absl::Status Solve(int l, double ridge, AttentionTensors* a) const {
    const Layer& ly = layers_[l];
    absl::Status s = SolveOutputRidge(ly.g, ly.r, ly.dim, w_.config.hidden_size,
                                      ridge, &a->o);
    if (s.ok()) return s;
    return absl::Status(s.code(), absl::StrCat("layer ", l, ": ", s.message()));
  }

 private:
  struct Layer {
    int dim = 0;            // H * d_vo
    std::vector<double> g;  // [dim, dim]
    std::vector<double> r;  // [hidden, dim]
  };
  const ModelWeights& w_;
  const std::vector<LatentLayerMaps>& maps_;
  std::vector<Layer> layers_;
};

}  // namespace

absl::Status SolveOutputRidge(const std::vector<double>& g,
                              const std::vector<double>& r, int dim,
                              int64_t hidden, double ridge,
                              std::vector<float>* o) {
  if (o->size() != static_cast<size_t>(hidden * dim) ||
      g.size() != static_cast<size_t>(dim) * dim ||
      r.size() != static_cast<size_t>(hidden * dim)) {
    return absl::InvalidArgumentError(
        absl::StrCat("refit: output projection has ", o->size(),
                     " values, expected ", hidden * dim));
  }
  double trace = 0.0;
  for (int i = 0; i < dim; ++i) trace += g[static_cast<size_t>(i) * dim + i];
  const double lambda = std::max(ridge * trace / dim, 1e-12);
  std::vector<double> lhs = g;
  for (int i = 0; i < dim; ++i) lhs[static_cast<size_t>(i) * dim + i] += lambda;
  // (G + lambda I) X = (R + lambda W0)^T, X = W'^T [dim, hidden].
  std::vector<double> rhs(static_cast<size_t>(dim) * hidden);
  for (int64_t row = 0; row < hidden; ++row) {
    for (int c = 0; c < dim; ++c) {
      rhs[static_cast<size_t>(c) * hidden + row] =
          r[row * dim + c] + lambda * (*o)[row * dim + c];
    }
  }
  auto x = SolveSymmetricPositive(lhs, dim, rhs, static_cast<int>(hidden));
  if (!x.ok()) return x.status();
  for (int64_t row = 0; row < hidden; ++row) {
    for (int c = 0; c < dim; ++c) {
      (*o)[row * dim + c] =
          static_cast<float>((*x)[static_cast<size_t>(c) * hidden + row]);
    }
  }
  return absl::OkStatus();
}

absl::Status RefitOutputProjections(
    const ModelWeights& w, const std::vector<std::vector<int32_t>>& docs,
    const std::vector<LatentLayerMaps>& maps,
    std::vector<AttentionTensors>* tensors, const RefitOptions& options) {
  const int layers = w.config.num_layers;
  if (static_cast<int>(maps.size()) != layers ||
      static_cast<int>(tensors->size()) != layers || !(options.ridge > 0)) {
    return absl::InvalidArgumentError(
        "refit: one map and one tensor set per layer, ridge > 0");
  }
  if (docs.empty()) return absl::InvalidArgumentError("refit: no documents");
  RefitObserver observer(w, maps);
  absl::Status seen = ObserveLayers(w, docs, &observer);
  if (!seen.ok()) return seen;
  for (int l = 0; l < layers; ++l) {
    absl::Status s = observer.Solve(l, options.ridge, &(*tensors)[l]);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace latentkv::model::transform
