#include "model/transform/latent_sharing.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/transform/eigen.h"
#include "model/transform/forward.h"
#include "model/transform/latent_maps.h"

namespace latentkv::model::transform {
namespace {

using Vec = std::vector<double>;

}  // namespace

absl::StatusOr<std::vector<double>> WeightedSpectrum(
    const std::vector<double>& r, const std::vector<double>& c, int n) {
  const Vec m = DenseProduct(DenseProduct(r, c, n, n, n), r, n, n, n);
  auto e = TopEigenSymmetric(m, n, n);
  if (!e.ok()) return e.status();
  for (double& v : e->values) v = std::max(v, 0.0);
  return e->values;
}

// tail[i] = sum of values[i..]: the residual of keeping i components.
std::vector<double> Tails(const std::vector<double>& values) {
  Vec tail(values.size() + 1, 0.0);
  for (int i = static_cast<int>(values.size()) - 1; i >= 0; --i) {
    tail[i] = tail[i + 1] + values[i];
  }
  return tail;
}

namespace {

double At(const Vec& tail, int i) {
  return i >= static_cast<int>(tail.size()) ? 0.0 : tail[std::max(i, 0)];
}

// min over r_k + r_v = d of alpha * key[r_k] + value[r_v].
double BestSplit(const Vec& key, const Vec& value, double alpha, int d) {
  double best = std::numeric_limits<double>::infinity();
  for (int rk = 0; rk <= d; ++rk) {
    best = std::min(best, alpha * At(key, rk) + At(value, d - rk));
  }
  return best;
}

}  // namespace

absl::StatusOr<std::vector<SharingLayerResult>> StudyLatentSharing(
    const ModelWeights& w, const std::vector<LayerStats>& stats,
    const std::vector<std::vector<int>>& kept, const SharingOptions& options) {
  const ModelConfig& c = w.config;
  absl::Status usable = CheckLlamaModel(w);
  if (!usable.ok()) return usable;
  const int nkv = c.num_kv_heads, nh = c.num_heads, group = nh / nkv;
  if (static_cast<int>(stats.size()) != c.num_layers ||
      static_cast<int>(kept.size()) != c.num_layers) {
    return absl::InvalidArgumentError(
        "sharing study: one LayerStats and one kept-pair list per layer");
  }
  std::vector<SharingLayerResult> out;
  for (int l = 0; l < c.num_layers; ++l) {
    const int hs = c.qk_head_dim[l], hv = c.vo_head_dim[l];
    const int rope = 2 * static_cast<int>(kept[l].size());
    const int per_head = options.d_qk - rope + options.d_vo;
    const int dim = nkv * (hs + hv);
    if (options.d_qk > hs || options.d_vo > hv || rope > options.d_qk ||
        per_head < 0 || stats[l].q_moment.size() != static_cast<size_t>(nkv) ||
        stats[l].kv_moment.size() != static_cast<size_t>(dim) * dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("sharing study: layer ", l,
                       " dims or statistics (Calibrate with kv_joint_moment)"));
    }
    // P: the channels of a head that lose RoPE.
    const std::vector<int> free = PositionFreeChannels(kept[l], hs);
    const int m = static_cast<int>(free.size());
    const int km = nkv * m, vm = nkv * hv;
    const Vec& f = stats[l].kv_moment;
    // Index lists into f: every head's P channels, every head's values.
    std::vector<int> kidx, vidx;
    for (int g = 0; g < nkv; ++g) {
      for (int p : free) kidx.push_back(g * hs + p);
    }
    for (int i = 0; i < vm; ++i) vidx.push_back(nkv * hs + i);
    std::vector<int> sel = kidx;
    sel.insert(sel.end(), vidx.begin(), vidx.end());
    // Weights: Cq_g^1/2 (keys) and S_g^1/2 (values), per head and joint.
    Vec wk(static_cast<size_t>(km) * km, 0.0),
        wv(static_cast<size_t>(vm) * vm, 0.0);
    std::vector<Vec> key_tails, value_tails;
    double tr_k = 0, tr_v = 0;
    for (int g = 0; g < nkv; ++g) {
      const Vec cq = SquareSubmatrix(stats[l].q_moment[g], hs, free);
      const Vec sg = OutputMetric(w, l, g * group, group);
      auto rq = SymmetricSquareRoots(cq, m);
      auto rs = SymmetricSquareRoots(sg, hv);
      if (!rq.ok()) return rq.status();
      if (!rs.ok()) return rs.status();
      PutDiagonalBlock(rq->sqrt, m, g * m, km, &wk);
      PutDiagonalBlock(rs->sqrt, hv, g * hv, vm, &wv);
      std::vector<int> kg(kidx.begin() + g * m, kidx.begin() + (g + 1) * m);
      std::vector<int> vg(vidx.begin() + g * hv, vidx.begin() + (g + 1) * hv);
      auto ek = WeightedSpectrum(rq->sqrt, SquareSubmatrix(f, dim, kg), m);
      auto ev = WeightedSpectrum(rs->sqrt, SquareSubmatrix(f, dim, vg), hv);
      if (!ek.ok()) return ek.status();
      if (!ev.ok()) return ev.status();
      key_tails.push_back(Tails(*ek));
      value_tails.push_back(Tails(*ev));
      tr_k += key_tails.back()[0];
      tr_v += value_tails.back()[0];
    }
    auto jk = WeightedSpectrum(wk, SquareSubmatrix(f, dim, kidx), km);
    auto jv = WeightedSpectrum(wv, SquareSubmatrix(f, dim, vidx), vm);
    if (!jk.ok()) return jk.status();
    if (!jv.ok()) return jv.status();
    const Vec joint_k = Tails(*jk), joint_v = Tails(*jv);
    const Vec fsel = SquareSubmatrix(f, dim, sel);
    const double alpha0 = tr_k > 0 ? tr_v / tr_k : 1.0;
    const int budget = nkv * per_head;
    for (double scale : options.alpha_scales) {
      const double alpha = alpha0 * scale;
      Vec ws(static_cast<size_t>(km + vm) * (km + vm), 0.0);
      Vec wka = wk;
      for (double& x : wka) x *= std::sqrt(alpha);
      PutDiagonalBlock(wka, km, 0, km + vm, &ws);
      PutDiagonalBlock(wv, vm, km, km + vm, &ws);
      auto sh = WeightedSpectrum(ws, fsel, km + vm);
      if (!sh.ok()) return sh.status();
      const Vec shared = Tails(*sh);
      // Per head: the same split (n key, u - n value dims) in every head.
      auto per_head_at = [&](int u) {
        double best = std::numeric_limits<double>::infinity();
        for (int n = 0; n <= u; ++n) {
          double r = 0;
          for (int g = 0; g < nkv; ++g) {
            r += alpha * At(key_tails[g], n) + At(value_tails[g], u - n);
          }
          best = std::min(best, r);
        }
        return best;
      };
      SharingLayerResult res;
      res.layer = l;
      res.alpha = alpha;
      res.budget_dims = budget;
      res.rotary_dims = nkv * rope;
      res.total = alpha * tr_k + tr_v;
      res.per_head.residual = per_head_at(per_head);
      res.per_head.dims_to_match = budget;
      res.joint.residual = BestSplit(joint_k, joint_v, alpha, budget);
      res.shared.residual = At(shared, budget);
      const double target = res.per_head.residual * (1 + 1e-12) + 1e-300;
      res.joint.dims_to_match = budget;
      res.shared.dims_to_match = budget;
      for (int d = 0; d <= budget; ++d) {
        if (BestSplit(joint_k, joint_v, alpha, d) <= target) {
          res.joint.dims_to_match = d;
          break;
        }
      }
      for (int d = 0; d <= budget; ++d) {
        if (At(shared, d) <= target) {
          res.shared.dims_to_match = d;
          break;
        }
      }
      out.push_back(res);
    }
  }
  return out;
}

}  // namespace latentkv::model::transform
