#include "model/transform/pair_search.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/transform/forward.h"
#include "model/transform/latent_maps.h"

namespace latentkv::model::transform {
namespace {

// One document's activations of one layer.
struct Stored {
  int64_t tokens = 0;
  std::vector<double> q, k, v;  // roped q [T,H,d], roped k [T,K,d], v [T,K,dv]
};

class Store : public LayerObserver {
 public:
  explicit Store(int layers) : layers_(layers) {}
  void Observe(const LayerActivations& a) override {
    const ModelConfig* c = config_;
    const int64_t n = a.tokens;
    const int d = c->qk_head_dim[a.layer], dv = c->vo_head_dim[a.layer];
    Stored s;
    s.tokens = n;
    s.q.assign(a.q_rope, a.q_rope + n * c->num_heads * d);
    s.k.assign(a.k_rope, a.k_rope + n * c->num_kv_heads * d);
    s.v.assign(a.v, a.v + n * c->num_kv_heads * dv);
    layers_[a.layer].push_back(std::move(s));
  }
  void set_config(const ModelConfig* c) { config_ = c; }
  const std::vector<Stored>& layer(int l) const { return layers_[l]; }

 private:
  const ModelConfig* config_ = nullptr;
  std::vector<std::vector<Stored>> layers_;
};

// error(kept) of one layer; `mask[j]` says whether pair j is kept.
double Error(const ModelConfig& c, int l, const std::vector<Stored>& docs,
             const std::vector<char>& mask,
             const std::vector<std::vector<double>>& s_h) {
  const int nh = c.num_heads, nkv = c.num_kv_heads, group = nh / nkv;
  const int d = c.qk_head_dim[l], half = d / 2, dv = c.vo_head_dim[l];
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  double err = 0.0;
  std::vector<double> full, part, dov(dv);
  for (const Stored& doc : docs) {
    const int64_t n = doc.tokens;
    full.resize(n);
    part.resize(n);
    for (int h = 0; h < nh; ++h) {
      const int kvh = h / group;
      for (int64_t t = 0; t < n; ++t) {
        const double* q = &doc.q[(t * nh + h) * d];
        double mf = -INFINITY, mp = -INFINITY;
        for (int64_t s = 0; s <= t; ++s) {
          const double* k = &doc.k[(s * nkv + kvh) * d];
          double a = 0.0, b = 0.0;
          for (int j = 0; j < half; ++j) {
            const double cj = q[j] * k[j] + q[j + half] * k[j + half];
            a += cj;
            if (mask[j]) b += cj;
          }
          full[s] = a * scale;
          part[s] = b * scale;
          mf = std::max(mf, full[s]);
          mp = std::max(mp, part[s]);
        }
        double zf = 0.0, zp = 0.0;
        for (int64_t s = 0; s <= t; ++s) {
          zf += (full[s] = std::exp(full[s] - mf));
          zp += (part[s] = std::exp(part[s] - mp));
        }
        std::fill(dov.begin(), dov.end(), 0.0);
        for (int64_t s = 0; s <= t; ++s) {
          const double dp = full[s] / zf - part[s] / zp;
          const double* v = &doc.v[(s * nkv + kvh) * dv];
          for (int i = 0; i < dv; ++i) dov[i] += dp * v[i];
        }
        const std::vector<double>& m = s_h[h];  // W_o,h^T W_o,h [dv, dv]
        for (int i = 0; i < dv; ++i) {
          double acc = 0.0;
          for (int e = 0; e < dv; ++e) acc += m[i * dv + e] * dov[e];
          err += dov[i] * acc;
        }
      }
    }
  }
  return err;
}

// C(n, k), saturating at int64 max.
int64_t Choose(int n, int k) {
  long double r = 1;
  for (int i = 1; i <= k; ++i) r = r * (n - k + i) / i;
  return r > static_cast<long double>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(std::llround(r));
}

}  // namespace

absl::StatusOr<std::vector<std::vector<int>>> SearchRotaryPairs(
    const ModelWeights& w, const std::vector<std::vector<int32_t>>& docs,
    int d_qk, const PairSearchOptions& options) {
  const ModelConfig& c = w.config;
  if (d_qk < 2 || d_qk % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pair search: d_qk must be even and >= 2, got ", d_qk));
  }
  absl::Status usable = CheckLlamaModel(w);
  if (!usable.ok()) return usable;
  for (int l = 0; l < c.num_layers; ++l) {
    if (d_qk > c.qk_head_dim[l]) {
      return absl::InvalidArgumentError(absl::StrCat("pair search: d_qk ", d_qk,
                                                     " above layer ", l, "'s ",
                                                     c.qk_head_dim[l]));
    }
  }
  if (docs.empty() || options.max_docs <= 0) {
    return absl::InvalidArgumentError("pair search: no documents");
  }
  Store store(c.num_layers);
  store.set_config(&c);
  const size_t n_docs = std::min<size_t>(docs.size(), options.max_docs);
  absl::Status seen =
      ObserveLayers(w, absl::MakeConstSpan(docs.data(), n_docs), &store);
  if (!seen.ok()) return seen;
  std::vector<std::vector<int>> kept_all(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const int half = c.qk_head_dim[l] / 2, keep = d_qk / 2;
    std::vector<std::vector<double>> s_h;  // per query head's output metric
    for (int head = 0; head < c.num_heads; ++head) {
      s_h.push_back(OutputMetric(w, l, head, 1));
    }
    auto error = [&](const std::vector<char>& mask) {
      return Error(c, l, store.layer(l), mask, s_h);
    };
    std::vector<char> best;
    if (keep == half) {
      best.assign(half, 1);
    } else if (Choose(half, keep) <= options.max_exhaustive) {
      // Every mask with `keep` ones, in lexicographic permutation order.
      std::vector<char> mask(half, 0);
      std::fill(mask.end() - keep, mask.end(), 1);
      double best_err = INFINITY;
      do {
        const double e = error(mask);
        if (e < best_err) {
          best_err = e;
          best = mask;
        }
      } while (std::next_permutation(mask.begin(), mask.end()));
    } else {
      best.assign(half, 1);
      for (int kept = half; kept > keep; --kept) {
        int drop = -1;
        double drop_err = INFINITY;
        for (int j = 0; j < half; ++j) {
          if (!best[j]) continue;
          best[j] = 0;
          const double e = error(best);
          best[j] = 1;
          if (e < drop_err) {
            drop_err = e;
            drop = j;
          }
        }
        best[drop] = 0;
      }
    }
    for (int j = 0; j < half; ++j) {
      if (best[j]) kept_all[l].push_back(j);
    }
  }
  return kept_all;
}

}  // namespace latentkv::model::transform
