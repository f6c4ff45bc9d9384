#include "model/transform/gqa.h"

#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/transform/eigen.h"
#include "model/transform/forward.h"
#include "model/transform/gguf_convert.h"

namespace latentkv::model::transform {
namespace {

absl::Status CheckHeads(const ModelConfig& c, int n) {
  if (n <= 0 || c.num_kv_heads % n != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-heads ", n, " must be a positive divisor of the model's ",
        c.num_kv_heads, " KV heads"));
  }
  if (!c.rope_dims.empty()) {
    // The merge treats every key channel as part of a rotary pair.
    return absl::UnimplementedError(
        "--kv-heads: models with partial rotary (rope_dims) are not "
        "supported");
  }
  return absl::OkStatus();
}

// dst row `to` = a * src row `r0` + b * src row `r1` (+= when accumulate).
void MixRows(const float* src, int64_t r0, int64_t r1, double a, double b,
             int64_t cols, std::vector<double>* dst, int64_t to) {
  for (int64_t c = 0; c < cols; ++c) {
    (*dst)[to * cols + c] += a * src[r0 * cols + c] + b * src[r1 * cols + c];
  }
}

std::vector<float> ToFloat(const std::vector<double>& x) {
  return std::vector<float>(x.begin(), x.end());
}

}  // namespace

absl::StatusOr<std::vector<AttentionTensors>> GqaAttention(
    const ModelWeights& w, const std::vector<LayerStats>& stats, int n_new) {
  const ModelConfig& c = w.config;
  absl::Status s = CheckHeads(c, n_new);
  if (s.ok()) s = CheckLlamaModel(w);  // merges keys before any norm
  if (!s.ok()) return s;
  if (static_cast<int>(stats.size()) != c.num_layers) {
    return absl::InvalidArgumentError("gqa: one LayerStats per layer");
  }
  const int nh = c.num_heads, nkv = c.num_kv_heads, g = nkv / n_new;
  const int qpk = nh / nkv;  // query heads per old KV head
  const int64_t h = c.hidden_size;
  ModelConfig out_config = c;
  out_config.num_kv_heads = n_new;
  std::vector<AttentionTensors> out(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerStats& st = stats[l];
    const int d = c.qk_head_dim[l], hv = c.vo_head_dim[l], half = d / 2;
    if (st.group_size != g || st.d_qk != d || st.d_vo != hv ||
        static_cast<int>(st.v_moment.size()) != n_new) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gqa: layer ", l, " statistics do not match the model / group"));
    }
    const LayerWeights& lw = w.layers[l];
    const float* wq = lw.q_proj.f32();
    const float* wk = lw.k_proj.f32();
    const float* wv = lw.v_proj.f32();
    const float* wo = lw.o_proj.f32();
    std::vector<double> q(static_cast<size_t>(nh) * d * h, 0.0);
    std::vector<double> k(static_cast<size_t>(n_new) * d * h, 0.0);
    std::vector<double> v(static_cast<size_t>(n_new) * hv * h, 0.0);
    std::vector<double> o(static_cast<size_t>(nh) * hv * h, 0.0);
    const int64_t ocols = int64_t{nh} * hv;
    for (int grp = 0; grp < n_new; ++grp) {
      // Keys and queries, pair by pair.
      for (int j = 0; j < half; ++j) {
        const std::vector<std::complex<double>> m(
            st.k_pair_moment[grp].begin() + int64_t{j} * g * g,
            st.k_pair_moment[grp].begin() + int64_t{j + 1} * g * g);
        auto eig = TopEigenHermitian(m, g, 1);
        if (!eig.ok()) return eig.status();
        for (int i = 0; i < g; ++i) {
          const double a = eig->vectors[i].real(), b = eig->vectors[i].imag();
          const int old = grp * g + i;
          const int64_t r0 = int64_t{old} * d + j, r1 = r0 + half;
          const int64_t k0 = int64_t{grp} * d + j;
          MixRows(wk, r0, r1, a, b, h, &k, k0);
          MixRows(wk, r1, r0, a, -b, h, &k, k0 + half);
          for (int qh = old * qpk; qh < (old + 1) * qpk; ++qh) {
            const int64_t q0 = int64_t{qh} * d + j;
            MixRows(wq, q0, q0 + half, a, b, h, &q, q0);
            MixRows(wq, q0 + half, q0, a, -b, h, &q, q0 + half);
          }
        }
      }
      // Values: PCA of the concatenated group V, absorbed into W_o.
      auto eig = TopEigenSymmetric(st.v_moment[grp], g * hv, hv);
      if (!eig.ok()) return eig.status();
      const std::vector<double>& u = eig->vectors;  // [g*hv, hv]
      for (int cidx = 0; cidx < hv; ++cidx) {
        double* dst = &v[(int64_t{grp} * hv + cidx) * h];
        for (int row = 0; row < g * hv; ++row) {
          const double coef = u[int64_t{row} * hv + cidx];
          const float* src = wv + (int64_t{grp} * g * hv + row) * h;
          for (int64_t col = 0; col < h; ++col) dst[col] += coef * src[col];
        }
      }
      for (int i = 0; i < g; ++i) {
        const int old = grp * g + i;
        for (int qh = old * qpk; qh < (old + 1) * qpk; ++qh) {
          for (int64_t r = 0; r < h; ++r) {
            for (int cidx = 0; cidx < hv; ++cidx) {
              double acc = 0.0;
              for (int e = 0; e < hv; ++e) {
                acc += wo[r * ocols + int64_t{qh} * hv + e] *
                       u[(int64_t{i} * hv + e) * hv + cidx];
              }
              o[r * ocols + int64_t{qh} * hv + cidx] = acc;
            }
          }
        }
      }
    }
    AttentionTensors& a = out[l];
    a.q = ToFloat(q);
    a.k = ToFloat(k);
    a.v = ToFloat(v);
    a.o = ToFloat(o);
    if (lw.rope_inv_freq != DefaultRopeInvFreq(out_config, l)) {
      a.rope_inv_freq = lw.rope_inv_freq;
    }
  }
  return out;
}

absl::Status ConvertGqa(const std::string& model_dir,
                        const std::string& out_dir, const GqaOptions& options) {
  auto w = LoadSourceModel(model_dir);
  if (!w.ok()) return w.status();
  const ModelConfig& src = (*w)->config;
  absl::Status s = CheckHeads(src, options.num_kv_heads);
  if (s.ok()) s = CheckLlamaModel(**w);
  if (!s.ok()) return s;
  if (options.calibration.path.empty()) {
    return absl::InvalidArgumentError(
        "--kv-heads needs calibration text (--calib-text FILE)");
  }
  auto docs = LoadCalibrationDocs(model_dir, src, options.calibration);
  if (!docs.ok()) return docs.status();
  CalibrationOptions co;
  co.kv_group_size = src.num_kv_heads / options.num_kv_heads;
  co.attention_scores = false;
  auto stats = Calibrate(**w, *docs, co);
  if (!stats.ok()) return stats.status();
  auto attn = GqaAttention(**w, *stats, options.num_kv_heads);
  if (!attn.ok()) return attn.status();
  ModelConfig config = src;
  config.num_kv_heads = options.num_kv_heads;
  s = WriteConvertedModel(**w, model_dir, config, *attn, out_dir, options.dtype,
                          "latentkv gqa",
                          /*copy_tokenizer=*/(*w)->gguf == nullptr);
  if (!s.ok()) return s;
  return WriteModelTokenizer(**w, out_dir);
}

}  // namespace latentkv::model::transform
