#include "model/transform/rank_allocation.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/transform/forward.h"

namespace latentkv::model::transform {
namespace {

using Vec = std::vector<double>;

double SquaredDistance(const Vec& a, const double* b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

// c [m, n] (leading dim ldc) = alpha a [m, k] b^T [k, n] + beta c.
void GemmNt(int m, int n, int k, const double* a, int lda, const double* b,
            int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0, a, lda, b,
              ldb, beta, c, ldc);
}

// c [m, n] = a [m, k] b [k, n] (leading dims given).
void GemmNn(int m, int n, int k, const double* a, int lda, const double* b,
            int ldb, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0, a, lda,
              b, ldb, 0.0, c, ldc);
}

// Causal softmax of logits [t, t] (rows s <= t) into probs [t, t] (zeros
// above the diagonal).
void CausalSoftmax(const Vec& logits, int64_t n, Vec* probs) {
  probs->assign(static_cast<size_t>(n * n), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    const double* l = &logits[t * n];
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t s = 0; s <= t; ++s) mx = std::max(mx, l[s]);
    double sum = 0.0;
    double* p = &(*probs)[t * n];
    for (int64_t s = 0; s <= t; ++s) sum += (p[s] = std::exp(l[s] - mx));
    for (int64_t s = 0; s <= t; ++s) p[s] /= sum;
  }
}

class CurveObserver : public LayerObserver {
 public:
  CurveObserver(const ModelWeights& w,
                const std::vector<std::vector<LatentLayerMaps>>& candidates,
                std::vector<LayerErrorCurves>* curves)
      : w_(w), candidates_(candidates), curves_(curves) {}

  bool WantsProbs() const override { return true; }

  void Observe(const LayerActivations& a) override {
    const ModelConfig& c = w_.config;
    const int l = a.layer;
    LayerErrorCurves& cv = (*curves_)[l];
    const int64_t n = a.tokens, hidden = c.hidden_size;
    const int nh = c.num_heads, nkv = c.num_kv_heads, group = nh / nkv;
    const int hs = c.qk_head_dim[l], hv = c.vo_head_dim[l], wide = nh * hv;
    cv.tokens += n;
    for (int64_t i = 0; i < n * hidden; ++i) {
      cv.residual_energy += a.residual[i] * a.residual[i];
      cv.output_energy += a.output[i] * a.output[i];
    }
    const Tensor& o = w_.layers[l].o_proj;
    const Vec wo(o.f32(), o.f32() + hidden * wide);
    const int ni = static_cast<int>(n);
    Vec z(static_cast<size_t>(n * wide)), out(static_cast<size_t>(n * hidden));
    Vec probs;
    for (size_t cand = 0; cand < candidates_.size(); ++cand) {
      const LatentLayerMaps& m = candidates_[cand][l];
      // New KV heads kh, each reading `span` source heads (joint_latent.h),
      // of dq = span * hs dims at full rank.
      const int rope = m.rope_dims, dq = m.d_qk;
      const int kh = static_cast<int>(m.k.size()), span = nkv / kh;
      const int new_group = nh / kh;
      const double scale = 1.0 / std::sqrt(static_cast<double>(dq));
      Vec q = MapHeads(a.q, n, nh, hs, m.q, dq);
      Vec k = MapHeads(a.k, n, kh, span * hs, m.k, dq);
      ReferenceRope(&q, n, nh, dq, rope, m.inv_freq.data());
      ReferenceRope(&k, n, kh, dq, rope, m.inv_freq.data());
      // logits[h] [T, T]: rotary channels, then two position-free ones per
      // step (the maps' rows are in rank order).
      std::vector<Vec> logits(nh, Vec(static_cast<size_t>(n * n), 0.0));
      auto add_channels = [&](int from, int to) {
        for (int h = 0; h < nh; ++h) {
          const int g = h / new_group;
          for (int64_t t = 0; t < n; ++t) {
            const double* qt = &q[(t * nh + h) * dq];
            for (int64_t s = 0; s <= t; ++s) {
              const double* ks = &k[(s * kh + g) * dq];
              double acc = 0.0;
              for (int ch = from; ch < to; ++ch) acc += qt[ch] * ks[ch];
              logits[h][t * n + s] += scale * acc;
            }
          }
        }
      };
      add_channels(0, rope);
      const int steps = (dq - rope) / 2;
      for (int i = 0; i <= steps; ++i) {
        if (i > 0) add_channels(rope + 2 * i - 2, rope + 2 * i);
        for (int h = 0; h < nh; ++h) {
          CausalSoftmax(logits[h], n, &probs);
          GemmNn(ni, hv, ni, probs.data(), ni, a.v + (h / group) * hv, nkv * hv,
                 &z[h * hv], wide);
        }
        GemmNt(ni, static_cast<int>(hidden), wide, z.data(), wide, wo.data(),
               wide, 0.0, out.data(), static_cast<int>(hidden));
        cv.key[cand][i] += SquaredDistance(out, a.output);
      }
    }
    const LatentLayerMaps& m = candidates_[0][l];
    const int kh = static_cast<int>(m.v.size()), span = nkv / kh;
    const int new_group = nh / kh, dv = m.d_vo, vwide = nh * dv;
    // Whitened values [T, kh, dv].
    const Vec u = MapHeads(a.v, n, kh, span * hv, m.v, dv);
    Vec ubar(static_cast<size_t>(n * vwide));
    // Values under the source layer's own attention (exact keys: every
    // pair rotary), as the forward computed it.
    for (int h = 0; h < nh; ++h) {
      GemmNn(ni, dv, ni, a.probs + h * n * n, ni, &u[(h / new_group) * dv],
             kh * dv, &ubar[h * dv], vwide);
    }
    // Values: component c of every head at once. WoB[:, h dv + c] = W_o,h
    // times the c-th column of the head's read-back map [hv, dv]; both it
    // and ubar reordered component-major (column c * H + h).
    Vec wob(static_cast<size_t>(hidden * vwide), 0.0);
    for (int64_t r = 0; r < hidden; ++r) {
      for (int h = 0; h < nh; ++h) {
        const double* src = &wo[r * wide + h * hv];
        for (int cc = 0; cc < dv; ++cc) {
          double acc = 0.0;
          for (int e = 0; e < hv; ++e) {
            acc += src[e] * m.o[h][static_cast<size_t>(e) * dv + cc];
          }
          wob[r * vwide + cc * nh + h] = acc;
        }
      }
    }
    Vec ub(ubar.size());
    for (int64_t t = 0; t < n; ++t) {
      for (int h = 0; h < nh; ++h) {
        for (int cc = 0; cc < dv; ++cc) {
          ub[t * vwide + cc * nh + h] = ubar[t * vwide + h * dv + cc];
        }
      }
    }
    std::fill(out.begin(), out.end(), 0.0);
    cv.value[0] += SquaredDistance(out, a.output);
    for (int cc = 0; cc < dv; ++cc) {
      GemmNt(ni, static_cast<int>(hidden), nh, &ub[cc * nh], vwide,
             &wob[cc * nh], vwide, 1.0, out.data(), static_cast<int>(hidden));
      cv.value[cc + 1] += SquaredDistance(out, a.output);
    }
  }

 private:
  const ModelWeights& w_;
  const std::vector<std::vector<LatentLayerMaps>>& candidates_;
  std::vector<LayerErrorCurves>* curves_;
};

}  // namespace

absl::StatusOr<AllocationWeight> ParseAllocationWeight(absl::string_view text) {
  if (text == "residual") return AllocationWeight::kResidual;
  if (text == "relative") return AllocationWeight::kRelative;
  if (text == "absolute") return AllocationWeight::kAbsolute;
  return absl::InvalidArgumentError(absl::StrCat(
      "allocation weight must be residual, relative or absolute; got '", text,
      "'"));
}

absl::StatusOr<std::vector<LayerErrorCurves>> MeasureErrorCurves(
    const ModelWeights& w, absl::Span<const std::vector<int32_t>> docs,
    const std::vector<std::vector<LatentLayerMaps>>& candidates,
    int64_t max_tokens) {
  const ModelConfig& c = w.config;
  if (candidates.empty()) {
    return absl::InvalidArgumentError("error curves: no candidate maps");
  }
  absl::Status usable = CheckLlamaModel(w);
  if (!usable.ok()) return usable;
  std::vector<LayerErrorCurves> curves(c.num_layers);
  for (const std::vector<LatentLayerMaps>& full : candidates) {
    if (static_cast<int>(full.size()) != c.num_layers) {
      return absl::InvalidArgumentError("error curves: one map set per layer");
    }
    for (int l = 0; l < c.num_layers; ++l) {
      const LatentLayerMaps& m = full[l];
      const int hs = c.qk_head_dim[l], hv = c.vo_head_dim[l];
      const int kh = static_cast<int>(m.k.size());
      const int span =
          kh > 0 && c.num_kv_heads % kh == 0 ? c.num_kv_heads / kh : 0;
      if (span == 0 || m.d_qk != span * hs || m.d_vo != span * hv ||
          m.rope_dims > m.d_qk || m.rope_dims % 2 != 0 ||
          m.q.size() != static_cast<size_t>(c.num_heads) ||
          m.o.size() != static_cast<size_t>(c.num_heads) ||
          m.v.size() != static_cast<size_t>(kh) ||
          (!curves[l].key.empty() &&
           static_cast<int>(curves[l].value.size()) != m.d_vo + 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "error curves: layer ", l, " maps are not full rank (d_qk ", m.d_qk,
            "/", span * hs, ", d_vo ", m.d_vo, "/", span * hv, ")"));
      }
      curves[l].rope_dims.push_back(m.rope_dims);
      curves[l].key.emplace_back((m.d_qk - m.rope_dims) / 2 + 1, 0.0);
      curves[l].value.assign(m.d_vo + 1, 0.0);
    }
  }
  size_t used = 0;
  int64_t tokens = 0;
  while (used < docs.size() && (used == 0 || tokens < max_tokens)) {
    tokens += static_cast<int64_t>(docs[used].size());
    ++used;
  }
  if (used == 0)
    return absl::InvalidArgumentError("error curves: no documents");
  CurveObserver observer(w, candidates, &curves);
  absl::Status s = ObserveLayers(w, docs.subspan(0, used), &observer);
  if (!s.ok()) return s;
  return curves;
}

absl::StatusOr<std::vector<LayerRanks>> AllocateRanks(
    const std::vector<LayerErrorCurves>& curves, int64_t budget_dims,
    AllocationWeight weight) {
  const int layers = static_cast<int>(curves.size());
  if (layers == 0 || budget_dims < 0 || budget_dims % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank allocation: need layers and an even budget, got ", budget_dims));
  }
  const int64_t units = budget_dims / 2;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // best[l][u]: the least weighted error of layer l with u units (d_qk +
  // d_vo = 2u), and its candidate and key units.
  std::vector<Vec> best(layers);
  std::vector<std::vector<std::pair<int, int>>> choice(layers);
  for (int l = 0; l < layers; ++l) {
    const LayerErrorCurves& cv = curves[l];
    const int vmax = (static_cast<int>(cv.value.size()) - 1) / 2;
    if (cv.key.empty() || cv.key.size() != cv.rope_dims.size() || vmax < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank allocation: layer ", l, " has empty curves"));
    }
    double wl = 1.0;
    if (weight == AllocationWeight::kResidual) wl = cv.residual_energy;
    if (weight == AllocationWeight::kRelative) wl = cv.output_energy;
    wl =
        wl > 0 ? (weight == AllocationWeight::kAbsolute ? 1.0 : 1.0 / wl) : 1.0;
    for (size_t cand = 0; cand < cv.key.size(); ++cand) {
      const int rope = cv.rope_dims[cand];
      const std::vector<double>& key = cv.key[cand];
      const int kmax = static_cast<int>(key.size()) - 1;
      for (int ki = rope > 0 ? 0 : 1; ki <= kmax; ++ki) {
        for (int vi = 1; vi <= vmax; ++vi) {
          const size_t u = static_cast<size_t>(rope / 2 + ki + vi);
          if (u >= best[l].size()) {
            best[l].resize(u + 1, kInf);
            choice[l].resize(u + 1, {-1, -1});
          }
          const double e = wl * (key[ki] + cv.value[2 * vi]);
          if (e < best[l][u]) {
            best[l][u] = e;
            choice[l][u] = {static_cast<int>(cand), ki};
          }
        }
      }
    }
  }
  // total[l][b]: the least sum over layers 0..l with b units in all.
  std::vector<Vec> total(layers, Vec(units + 1, kInf));
  std::vector<std::vector<int>> take(layers, std::vector<int>(units + 1, -1));
  for (int l = 0; l < layers; ++l) {
    for (int64_t b = 0; b <= units; ++b) {
      for (int u = 0; u < static_cast<int>(best[l].size()) && u <= b; ++u) {
        if (best[l][u] == kInf) continue;
        const double prev =
            l == 0 ? (b == u ? 0.0 : kInf) : total[l - 1][b - u];
        if (prev == kInf) continue;
        if (prev + best[l][u] < total[l][b]) {
          total[l][b] = prev + best[l][u];
          take[l][b] = u;
        }
      }
    }
  }
  int64_t b = -1;
  for (int64_t i = 0; i <= units; ++i) {
    if (total[layers - 1][i] < kInf &&
        (b < 0 || total[layers - 1][i] < total[layers - 1][b])) {
      b = i;
    }
  }
  if (b < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank allocation: a budget of ", budget_dims,
        " dims is below the minimum (2 value dims and at least 2 key dims per "
        "layer)"));
  }
  std::vector<LayerRanks> ranks(layers);
  for (int l = layers - 1; l >= 0; --l) {
    const int u = take[l][b];
    const auto [cand, ki] = choice[l][u];
    const int rope = curves[l].rope_dims[cand];
    ranks[l].candidate = cand;
    ranks[l].d_qk = rope + 2 * ki;
    ranks[l].d_vo = 2 * u - ranks[l].d_qk;
    b -= u;
  }
  return ranks;
}

}  // namespace latentkv::model::transform
