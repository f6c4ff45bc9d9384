#include "model/transform/calibration.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/text_lines.h"
#include "model/tokenizer/tokenizer.h"
#include "model/transform/forward.h"

namespace latentkv::model::transform {
namespace {

// Upper triangle of m [d, d] += x x^T.
void AddOuter(const double* x, int d, std::vector<double>* m) {
  for (int r = 0; r < d; ++r) {
    double* row = m->data() + static_cast<size_t>(r) * d;
    const double xr = x[r];
    for (int c = r; c < d; ++c) row[c] += xr * x[c];
  }
}

// Accumulates sums into LayerStats; Finish() turns them into means.
class StatsObserver : public LayerObserver {
 public:
  StatsObserver(const ModelConfig& c, const CalibrationOptions& o)
      : options_(o), stats_(c.num_layers) {
    for (int l = 0; l < c.num_layers; ++l) {
      LayerStats& s = stats_[l];
      s.d_qk = c.qk_head_dim[l];
      s.d_vo = c.vo_head_dim[l];
      s.num_heads = c.num_heads;
      s.num_kv_heads = c.num_kv_heads;
      s.group_size = o.kv_group_size;
      const int groups = c.num_kv_heads / o.kv_group_size;
      const size_t gv = static_cast<size_t>(o.kv_group_size) * s.d_vo;
      const size_t half = s.d_qk / 2;
      const size_t g2 = static_cast<size_t>(o.kv_group_size) * o.kv_group_size;
      s.v_moment.assign(groups, std::vector<double>(gv * gv, 0.0));
      s.k_pair_moment.assign(groups,
                             std::vector<std::complex<double>>(half * g2));
      const size_t dd = static_cast<size_t>(s.d_qk) * s.d_qk;
      s.k_moment.assign(c.num_kv_heads, std::vector<double>(dd, 0.0));
      s.q_moment.assign(c.num_kv_heads, std::vector<double>(dd, 0.0));
      s.q_pair_abs.assign(c.num_heads * half, 0.0);
      s.k_pair_abs.assign(c.num_kv_heads * half, 0.0);
      s.pair_attn_mag.assign(c.num_heads * half, 0.0);
      s.pair_logit_var.assign(c.num_heads * half, 0.0);
      if (o.kv_joint_moment) {
        const size_t dim =
            static_cast<size_t>(c.num_kv_heads) * (s.d_qk + s.d_vo);
        s.kv_moment.assign(dim * dim, 0.0);
      }
    }
  }

  bool WantsProbs() const override { return options_.attention_scores; }

  void Observe(const LayerActivations& a) override {
    LayerStats& s = stats_[a.layer];
    const int64_t n = a.tokens;
    const int nh = s.num_heads, nkv = s.num_kv_heads, d = s.d_qk, half = d / 2,
              dvo = s.d_vo, g = s.group_size;
    const int group = nh / nkv;
    s.tokens += n;
    std::vector<std::complex<double>> z(g);
    for (int64_t t = 0; t < n; ++t) {
      for (size_t gi = 0; gi < s.v_moment.size(); ++gi) {
        // The group's V heads are contiguous in v[t]: heads gi*G .. +G-1.
        const double* vg = a.v + (t * nkv + gi * g) * dvo;
        const int m = g * dvo;
        std::vector<double>& mom = s.v_moment[gi];
        for (int r = 0; r < m; ++r) {
          for (int c = r; c < m; ++c) mom[r * m + c] += vg[r] * vg[c];
        }
        for (int j = 0; j < half; ++j) {
          for (int i = 0; i < g; ++i) {
            const double* kh = a.k + (t * nkv + gi * g + i) * d;
            z[i] = {kh[j], kh[j + half]};
          }
          std::complex<double>* km = &s.k_pair_moment[gi][j * g * g];
          for (int r = 0; r < g; ++r) {
            for (int c = 0; c < g; ++c) km[r * g + c] += z[r] * std::conj(z[c]);
          }
        }
      }
      for (int h = 0; h < nkv; ++h) {
        AddOuter(a.k + (t * nkv + h) * d, d, &s.k_moment[h]);
      }
      for (int h = 0; h < nh; ++h) {
        AddOuter(a.q + (t * nh + h) * d, d, &s.q_moment[h / group]);
      }
      for (int h = 0; h < nh; ++h) {
        const double* qh = a.q + (t * nh + h) * d;
        for (int j = 0; j < half; ++j) {
          s.q_pair_abs[h * half + j] +=
              std::sqrt(qh[j] * qh[j] + qh[j + half] * qh[j + half]);
        }
      }
      for (int h = 0; h < nkv; ++h) {
        const double* kh = a.k + (t * nkv + h) * d;
        for (int j = 0; j < half; ++j) {
          s.k_pair_abs[h * half + j] +=
              std::sqrt(kh[j] * kh[j] + kh[j + half] * kh[j + half]);
        }
      }
    }
    if (!s.kv_moment.empty()) AddJointMoment(a, nkv * d, nkv * dvo, &s);
    if (a.probs == nullptr) return;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    std::vector<double> mean(half), m2(half), kmag(half);
    for (int h = 0; h < nh; ++h) {
      const int kvh = h / group;
      for (int64_t t = 0; t < n; ++t) {
        const double* qr = a.q_rope + (t * nh + h) * d;
        const double* p = a.probs + (h * n + t) * n;
        std::fill(mean.begin(), mean.end(), 0.0);
        std::fill(m2.begin(), m2.end(), 0.0);
        std::fill(kmag.begin(), kmag.end(), 0.0);
        for (int64_t u = 0; u <= t; ++u) {
          const double* kr = a.k_rope + (u * nkv + kvh) * d;
          for (int j = 0; j < half; ++j) {
            const double c =
                (qr[j] * kr[j] + qr[j + half] * kr[j + half]) * scale;
            mean[j] += p[u] * c;
            m2[j] += p[u] * c * c;
            kmag[j] +=
                p[u] * std::sqrt(kr[j] * kr[j] + kr[j + half] * kr[j + half]);
          }
        }
        for (int j = 0; j < half; ++j) {
          s.pair_logit_var[h * half + j] +=
              std::max(0.0, m2[j] - mean[j] * mean[j]);
          // |roped q pair| == |pre-RoPE q pair|: rotation keeps magnitudes.
          s.pair_attn_mag[h * half + j] +=
              std::sqrt(qr[j] * qr[j] + qr[j + half] * qr[j + half]) * kmag[j];
        }
      }
    }
  }

  // kv_moment += f f^T summed over the tokens, f = [k (kd); v (vd)].
  static void AddJointMoment(const LayerActivations& a, int kd, int vd,
                             LayerStats* s) {
    const int dim = kd + vd;
    std::vector<double> x(static_cast<size_t>(a.tokens) * dim);
    for (int64_t t = 0; t < a.tokens; ++t) {
      std::copy(a.k + t * kd, a.k + (t + 1) * kd, &x[t * dim]);
      std::copy(a.v + t * vd, a.v + (t + 1) * vd, &x[t * dim + kd]);
    }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim,
                static_cast<int>(a.tokens), 1.0, x.data(), dim, x.data(), dim,
                1.0, s->kv_moment.data(), dim);
  }

  std::vector<LayerStats> Finish() {
    for (LayerStats& s : stats_) {
      if (s.tokens == 0) continue;
      const double inv = 1.0 / static_cast<double>(s.tokens);
      for (std::vector<double>& m : s.v_moment) {
        const int dim = static_cast<int>(std::lround(std::sqrt(m.size())));
        for (int r = 0; r < dim; ++r) {
          for (int c = r; c < dim; ++c) {
            m[r * dim + c] *= inv;
            m[c * dim + r] = m[r * dim + c];
          }
        }
      }
      for (double& x : s.kv_moment) x *= inv;
      for (auto& m : s.k_pair_moment) {
        for (auto& x : m) x *= inv;
      }
      for (auto* ms : {&s.k_moment, &s.q_moment}) {
        for (std::vector<double>& m : *ms) {
          const int dim = s.d_qk;
          for (int r = 0; r < dim; ++r) {
            for (int c = r; c < dim; ++c) {
              m[r * dim + c] *= inv;
              m[c * dim + r] = m[r * dim + c];
            }
          }
        }
      }
      for (auto* v : {&s.q_pair_abs, &s.k_pair_abs, &s.pair_attn_mag,
                      &s.pair_logit_var}) {
        for (double& x : *v) x *= inv;
      }
    }
    return std::move(stats_);
  }

 private:
  CalibrationOptions options_;
  std::vector<LayerStats> stats_;
};

}  // namespace

absl::StatusOr<std::vector<std::vector<int32_t>>> LoadCalibrationDocs(
    const std::string& model_dir, const ModelConfig& config,
    const CalibrationTextOptions& options) {
  std::ifstream in(options.path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open calibration text ", options.path));
  }
  auto tokenizer = LoadTokenizer(model_dir, config.vocab_size);
  if (!tokenizer.ok()) return tokenizer.status();
  std::vector<std::vector<int32_t>> docs;
  std::string line;
  int skipped = 0;
  while (GetTextLine(in, &line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (skipped < options.skip_lines) {
      ++skipped;
      continue;
    }
    if (options.max_lines > 0 &&
        static_cast<int>(docs.size()) >= options.max_lines) {
      break;
    }
    std::vector<int32_t> ids =
        (*tokenizer)->Encode(line, (*tokenizer)->add_bos());
    if (static_cast<int>(ids.size()) > config.max_position_embeddings) {
      ids.resize(config.max_position_embeddings);
    }
    docs.push_back(std::move(ids));
  }
  if (docs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.path, ": no non-empty lines after skipping ",
                     options.skip_lines));
  }
  return docs;
}

absl::StatusOr<std::vector<LayerStats>> Calibrate(
    const ModelWeights& weights, const std::vector<std::vector<int32_t>>& docs,
    const CalibrationOptions& options) {
  const ModelConfig& c = weights.config;
  if (options.kv_group_size <= 0 ||
      c.num_kv_heads % options.kv_group_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration: kv_group_size ", options.kv_group_size,
                     " does not divide num_kv_heads ", c.num_kv_heads));
  }
  if (docs.empty()) {
    return absl::InvalidArgumentError("calibration: no documents");
  }
  StatsObserver observer(c, options);
  absl::Status s = ObserveLayers(weights, docs, &observer);
  if (!s.ok()) return s;
  return observer.Finish();
}

}  // namespace latentkv::model::transform
