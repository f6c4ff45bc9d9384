// Test support: an independent float64 forward pass of a ModelWeights over
// a whole sequence (no KV cache, no kernels: plain loops in double), the
// reference the engine's logits are checked against. Covers the config's
// architecture features (Gemma 3: q/k norms, post norms, GeGLU, scaled
// embeddings, sliding windows, the attention scalar), written from HF's
// modeling_gemma3.py description, and KV-Latent maps after the q/k norms
// (ModelConfig::qk_norm_dim: each normed head times its own [d_qk, P]
// matrix).
#ifndef LATENTKV_WORKER_ENGINE_REFERENCE_FORWARD_FOR_TESTS_H_
#define LATENTKV_WORKER_ENGINE_REFERENCE_FORWARD_FOR_TESTS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "model/weights.h"

namespace latentkv::worker {

// y = x t^T in double: x [rows_x, in], t [out, in] (f32) -> [rows_x, out].
inline std::vector<double> ReferenceMatMul(const model::Tensor& t,
                                           const std::vector<double>& x,
                                           int rows_x) {
  const int64_t out = t.shape[0], in = t.shape[1];
  std::vector<double> y(rows_x * out);
  for (int r = 0; r < rows_x; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i)
        s += x[r * in + i] * double(t.f32()[o * in + i]);
      y[r * out + o] = s;
    }
  return y;
}

// Float64 reference forward over a whole sequence; returns the final
// RMS-normed hidden states [n, hidden].
inline std::vector<double> ReferenceFinalHidden(
    const model::ModelWeights& m, const std::vector<int32_t>& tokens) {
  const model::ModelConfig& c = m.config;
  const int n = tokens.size(), H = c.hidden_size;
  const auto& mat = ReferenceMatMul;
  // RMSNorm of every `dim`-wide row of x (Gemma's q/k norms: per head).
  auto rms_rows = [&](const std::vector<double>& x, const model::Tensor& w,
                      int dim) {
    std::vector<double> y(x.size());
    for (size_t r = 0; r < x.size() / dim; ++r) {
      double ss = 0;
      for (int i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + c.rms_norm_eps);
      for (int i = 0; i < dim; ++i)
        y[r * dim + i] = x[r * dim + i] * inv * w.f32()[i];
    }
    return y;
  };
  auto rms = [&](const std::vector<double>& x, const model::Tensor& w) {
    return rms_rows(x, w, H);
  };
  std::vector<double> x(n * H);
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < H; ++i)
      x[r * H + i] =
          m.embed_tokens.f32()[tokens[r] * H + i] * double{c.embedding_scale};
  for (int l = 0; l < c.num_layers; ++l) {
    const auto& w = m.layers[l];
    const int dq = c.qk_head_dim[l], dv = c.vo_head_dim[l];
    const int nh = c.num_heads, nkv = c.num_kv_heads, g = nh / nkv;
    auto h = rms(x, w.attn_norm);
    auto q = mat(w.q_proj, h, n), k = mat(w.k_proj, h, n),
         v = mat(w.v_proj, h, n);
    if (c.qkv_bias) {
      for (auto [t, b] : {std::pair{&q, &w.q_bias}, std::pair{&k, &w.k_bias},
                          std::pair{&v, &w.v_bias}}) {
        const size_t rows = b->numel();
        for (size_t i = 0; i < t->size(); ++i) (*t)[i] += b->f32()[i % rows];
      }
    }
    if (c.qk_norm) {
      const int dp = c.qk_proj_dim(l);
      q = rms_rows(q, w.q_norm, dp);
      k = rms_rows(k, w.k_norm, dp);
      if (c.qk_norm_dim > 0) {
        // Head hh of row r: out[i] = sum_j map[hh * dq + i, j] * in[j].
        auto map_heads = [&](const std::vector<double>& in,
                             const model::Tensor& map, int heads) {
          std::vector<double> out(n * heads * dq, 0.0);
          for (int r = 0; r < n; ++r)
            for (int hh = 0; hh < heads; ++hh)
              for (int i = 0; i < dq; ++i) {
                double s = 0;
                for (int j = 0; j < dp; ++j)
                  s += double(map.f32()[(hh * dq + i) * dp + j]) *
                       in[(r * heads + hh) * dp + j];
                out[(r * heads + hh) * dq + i] = s;
              }
          return out;
        };
        q = map_heads(q, w.q_latent, nh);
        k = map_heads(k, w.k_latent, nkv);
      }
    }
    double scale = c.query_pre_attn_scalar > 0
                       ? 1 / std::sqrt(double{c.query_pre_attn_scalar})
                       : 1 / std::sqrt(double(dq));
    // YaRN scales cos and sin by mscale: q.k by mscale^2.
    if (c.rope_scaling.type == model::ModelConfig::RopeScaling::Type::kYarn) {
      const double ms = c.rope_scaling.attention_factor > 0
                            ? c.rope_scaling.attention_factor
                            : 0.1 * std::log(c.rope_scaling.factor) + 1;
      scale *= ms * ms;
    }
    const int window = c.sliding_window.empty() ? 0 : c.sliding_window[l];
    // Partial rotary: channels [0, rd) rotate (rotate-half within them).
    const int rd = c.rope_dim(l);
    auto rope = [&](std::vector<double>& t, int heads) {
      for (int r = 0; r < n; ++r)
        for (int hh = 0; hh < heads; ++hh)
          for (int j = 0; j < rd / 2; ++j) {
            const double a = r * double(w.rope_inv_freq[j]);
            double& x0 = t[(r * heads + hh) * dq + j];
            double& x1 = t[(r * heads + hh) * dq + j + rd / 2];
            const double y0 = x0 * std::cos(a) - x1 * std::sin(a);
            const double y1 = x1 * std::cos(a) + x0 * std::sin(a);
            x0 = y0;
            x1 = y1;
          }
    };
    rope(q, nh);
    rope(k, nkv);
    std::vector<double> att(n * nh * dv, 0.0);
    for (int r = 0; r < n; ++r)
      for (int hh = 0; hh < nh; ++hh) {
        const int kh = hh / g;
        // Keys t in [first, r]: all before r, or the window's.
        const int first = window > 0 ? std::max(0, r - window + 1) : 0;
        std::vector<double> s(r + 1, 0.0);
        double mx = -1e300;
        for (int t = first; t <= r; ++t) {
          double d = 0;
          for (int i = 0; i < dq; ++i)
            d += q[(r * nh + hh) * dq + i] * k[(t * nkv + kh) * dq + i];
          s[t] = d * scale;
          mx = std::max(mx, s[t]);
        }
        double z = 0;
        for (int t = first; t <= r; ++t) z += (s[t] = std::exp(s[t] - mx));
        for (int t = first; t <= r; ++t)
          for (int i = 0; i < dv; ++i)
            att[(r * nh + hh) * dv + i] +=
                s[t] / z * v[(t * nkv + kh) * dv + i];
      }
    auto o = mat(w.o_proj, att, n);
    if (c.post_norms) o = rms(o, w.post_attn_norm);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    h = rms(x, w.ffn_norm);
    auto gt = mat(w.gate_proj, h, n), up = mat(w.up_proj, h, n);
    for (size_t i = 0; i < gt.size(); ++i) {
      const double g = gt[i];
      gt[i] = c.hidden_act == model::Activation::kGeluTanh
                  ? 0.5 * g *
                        (1 + std::tanh(std::sqrt(2 / M_PI) *
                                       (g + 0.044715 * g * g * g))) *
                        up[i]
                  : g / (1 + std::exp(-g)) * up[i];
    }
    auto d = mat(w.down_proj, gt, n);
    if (c.post_norms) d = rms(d, w.post_ffn_norm);
    for (size_t i = 0; i < x.size(); ++i) x[i] += d[i];
  }
  return rms(x, m.final_norm);
}

// Float64 reference forward over a whole sequence; returns [n, vocab].
inline std::vector<double> ReferenceLogits(const model::ModelWeights& m,
                                           const std::vector<int32_t>& tokens) {
  return ReferenceMatMul(m.lm_head, ReferenceFinalHidden(m, tokens),
                         static_cast<int>(tokens.size()));
}

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_REFERENCE_FORWARD_FOR_TESTS_H_
