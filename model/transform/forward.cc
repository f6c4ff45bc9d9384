#include "model/transform/forward.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace latentkv::model::transform {
namespace {

using Vec = std::vector<double>;

absl::Status CheckF32(const Tensor& t, const char* what) {
  if (t.dtype != DType::kF32 || t.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reference forward needs f32 weights in memory (", what, ")"));
  }
  return absl::OkStatus();
}

// y [n, heads, dout] = per head h, the f32 map rows [h * dout, +dout) of
// `map` [heads * dout, din] times x [n, heads, din].
Vec MapHeadsF32(const Vec& x, int64_t n, int heads, int din, const Tensor& map,
                int dout) {
  Vec y(static_cast<size_t>(n * heads * dout), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int h = 0; h < heads; ++h) {
      const double* in = &x[(t * heads + h) * din];
      for (int o = 0; o < dout; ++o) {
        const float* m = map.f32() + (static_cast<int64_t>(h) * dout + o) * din;
        double s = 0.0;
        for (int i = 0; i < din; ++i) s += static_cast<double>(m[i]) * in[i];
        y[(t * heads + h) * dout + o] = s;
      }
    }
  }
  return y;
}

}  // namespace

template <typename T>
void ReferenceRope(std::vector<T>* x, int64_t n, int heads, int d, int rope,
                   const float* inv, double sign) {
  const int half = rope / 2;
  for (int64_t t = 0; t < n; ++t) {
    for (int j = 0; j < half; ++j) {
      // Angles from f32 inverse frequencies, as the engine holds them.
      const double a =
          sign * static_cast<double>(t) * static_cast<double>(inv[j]);
      const T c = static_cast<T>(std::cos(a)), s = static_cast<T>(std::sin(a));
      for (int h = 0; h < heads; ++h) {
        T* p = &(*x)[(t * heads + h) * d];
        const T x0 = p[j], x1 = p[j + half];
        p[j] = x0 * c - x1 * s;
        p[j + half] = x0 * s + x1 * c;
      }
    }
  }
}

template void ReferenceRope<double>(std::vector<double>*, int64_t, int, int,
                                    int, const float*, double);
template void ReferenceRope<float>(std::vector<float>*, int64_t, int, int, int,
                                   const float*, double);

template <typename T>
void ReferenceProject(const std::vector<T>& x, int64_t n, const Tensor& w,
                      std::vector<T>* y) {
  const int rows = static_cast<int>(w.shape[0]);
  const int cols = static_cast<int>(w.shape[1]);
  y->assign(static_cast<size_t>(n) * rows, T{0});
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                rows, cols, 1.0f, x.data(), cols, w.f32(), cols, 0.0f,
                y->data(), rows);
  } else {
    // One buffer per thread, grown once: a fresh vector per call made every
    // projection page-fault its copy in (most of a calibration pass's time).
    thread_local std::vector<double> wd;
    wd.assign(w.f32(), w.f32() + static_cast<int64_t>(rows) * cols);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                rows, cols, 1.0, x.data(), cols, wd.data(), cols, 0.0,
                y->data(), rows);
  }
}

template <typename T>
void ReferenceRmsNorm(const std::vector<T>& x, int64_t dim, const float* w,
                      double eps, std::vector<T>* y) {
  y->resize(x.size());
  const int64_t n = static_cast<int64_t>(x.size()) / dim;
  for (int64_t t = 0; t < n; ++t) {
    const T* r = &x[t * dim];
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(r[i]) * r[i];
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) {
      (*y)[t * dim + i] = static_cast<T>(w[i] * (r[i] * scale));
    }
  }
}

template <typename T>
void ReferenceAddMlp(const LayerWeights& lw, int64_t dim, double eps,
                     std::vector<T>* h, Activation act) {
  const int64_t n = static_cast<int64_t>(h->size()) / dim;
  std::vector<T> xb, gate, up, down;
  ReferenceRmsNorm(*h, dim, lw.ffn_norm.f32(), eps, &xb);
  ReferenceProject(xb, n, lw.gate_proj, &gate);
  ReferenceProject(xb, n, lw.up_proj, &up);
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    const double a = act == Activation::kGeluTanh
                         ? 0.5 * g *
                               (1.0 + std::tanh(std::sqrt(2.0 / M_PI) *
                                                (g + 0.044715 * g * g * g)))
                         : g / (1.0 + std::exp(-g));
    gate[i] = static_cast<T>(a * up[i]);
  }
  ReferenceProject(gate, n, lw.down_proj, &down);
  if (lw.post_ffn_norm.data != nullptr) {
    ReferenceRmsNorm(down, dim, lw.post_ffn_norm.f32(), eps, &down);
  }
  for (size_t i = 0; i < h->size(); ++i) (*h)[i] += down[i];
}

template void ReferenceProject<double>(const std::vector<double>&, int64_t,
                                       const Tensor&, std::vector<double>*);
template void ReferenceProject<float>(const std::vector<float>&, int64_t,
                                      const Tensor&, std::vector<float>*);
template void ReferenceRmsNorm<double>(const std::vector<double>&, int64_t,
                                       const float*, double,
                                       std::vector<double>*);
template void ReferenceRmsNorm<float>(const std::vector<float>&, int64_t,
                                      const float*, double,
                                      std::vector<float>*);
template void ReferenceAddMlp<double>(const LayerWeights&, int64_t, double,
                                      std::vector<double>*, Activation);
template void ReferenceAddMlp<float>(const LayerWeights&, int64_t, double,
                                     std::vector<float>*, Activation);

absl::Status ObserveLayers(const ModelWeights& weights,
                           absl::Span<const std::vector<int32_t>> docs,
                           LayerObserver* observer) {
  ForwardOptions fo;
  fo.logits = false;
  fo.observer = observer;
  for (const std::vector<int32_t>& doc : docs) {
    auto r = Forward(weights, doc, fo);
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}

void ReferenceCausalAttention(const double* q, const double* k, const double* v,
                              int64_t n, int heads, int kv_heads, int d, int dv,
                              double scale, double* out, double* probs,
                              int window) {
  const int group = heads / kv_heads;
  std::vector<double> p(static_cast<size_t>(n));
  for (int h = 0; h < heads; ++h) {
    const int kvh = h / group;
    for (int64_t t = 0; t < n; ++t) {
      const double* qv = &q[(t * heads + h) * d];
      // Keys in [first, t]: all before t, or the sliding window's.
      const int64_t first =
          window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
      double mx = -INFINITY;
      for (int64_t s = first; s <= t; ++s) {
        const double* kv = &k[(s * kv_heads + kvh) * d];
        double dot = 0.0;
        for (int i = 0; i < d; ++i) dot += qv[i] * kv[i];
        p[s] = dot * scale;
        mx = std::max(mx, p[s]);
      }
      double z = 0.0;
      for (int64_t s = first; s <= t; ++s) z += (p[s] = std::exp(p[s] - mx));
      double* o = &out[(t * heads + h) * dv];
      std::fill(o, o + dv, 0.0);
      for (int64_t s = first; s <= t; ++s) {
        p[s] /= z;
        const double* vv = &v[(s * kv_heads + kvh) * dv];
        for (int i = 0; i < dv; ++i) o[i] += p[s] * vv[i];
        if (probs != nullptr) probs[(h * n + t) * n + s] = p[s];
      }
    }
  }
}

absl::Status CheckLlamaModel(const ModelWeights& w) {
  if (w.config.has_arch_features()) {
    return absl::UnimplementedError(
        "this transform supports Llama-architecture models only (this model "
        "has q/k norms, post norms, GeGLU, sliding windows or scaled "
        "embeddings: Gemma 3; biases or RoPE scaling: Qwen, Llama 3.1)");
  }
  return CheckReferenceModel(w);
}

absl::Status CheckReferenceModel(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  if (c.qkv_bias ||
      c.rope_scaling.type != ModelConfig::RopeScaling::Type::kNone ||
      !c.rope_freq_factors.empty()) {
    return absl::UnimplementedError(
        "calibration and the KV transforms do not support q/k/v biases "
        "(Qwen2) or RoPE scaling (Llama 3.1, YaRN)");
  }
  absl::Status s = CheckF32(w.embed_tokens, "embed_tokens");
  if (s.ok()) s = CheckF32(w.lm_head, "lm_head");
  for (const LayerWeights& l : w.layers) {
    for (const Tensor* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj,
                            &l.gate_proj, &l.up_proj, &l.down_proj}) {
      if (s.ok()) s = CheckF32(*t, "layer matrix");
    }
  }
  return s;
}

absl::StatusOr<std::vector<double>> Forward(const ModelWeights& w,
                                            const std::vector<int32_t>& tokens,
                                            const ForwardOptions& options) {
  const ModelConfig& c = w.config;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0 || n > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forward: need 1..", c.max_position_embeddings, " tokens, got ", n));
  }
  for (int32_t tok : tokens) {
    if (tok < 0 || tok >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward: token ", tok, " outside the vocabulary"));
    }
  }
  absl::Status s = CheckReferenceModel(w);
  if (!s.ok()) return s;
  const int64_t dim = c.hidden_size;
  const int nh = c.num_heads, nkv = c.num_kv_heads, group = nh / nkv;
  const double eps = c.rms_norm_eps;

  Vec x(static_cast<size_t>(n * dim));
  for (int64_t t = 0; t < n; ++t) {
    const float* e = w.embed_tokens.f32() + tokens[t] * dim;
    for (int64_t i = 0; i < dim; ++i) {
      x[t * dim + i] = static_cast<double>(e[i]) * c.embedding_scale;
    }
  }
  Vec xb, q, k, v, qr, kr, att, out, gate, up;
  Vec probs;
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const int dqk = c.qk_head_dim[l], dvo = c.vo_head_dim[l];
    ReferenceRmsNorm(x, dim, lw.attn_norm.f32(), eps, &xb);
    ReferenceProject(xb, n, lw.q_proj, &q);
    ReferenceProject(xb, n, lw.k_proj, &k);
    ReferenceProject(xb, n, lw.v_proj, &v);
    if (c.qk_norm) {
      // Per head, at the width the heads were projected at; then, with
      // KV-Latent maps after the norms, each head to d_qk.
      const int dp = c.qk_proj_dim(l);
      ReferenceRmsNorm(q, dp, lw.q_norm.f32(), eps, &q);
      ReferenceRmsNorm(k, dp, lw.k_norm.f32(), eps, &k);
      if (c.qk_latent_maps()) {
        q = MapHeadsF32(q, n, nh, dp, lw.q_latent, dqk);
        k = MapHeadsF32(k, n, nkv, dp, lw.k_latent, dqk);
      }
    }
    qr = q;
    kr = k;
    ReferenceRope(&qr, n, nh, dqk, c.rope_dim(l), lw.rope_inv_freq.data());
    ReferenceRope(&kr, n, nkv, dqk, c.rope_dim(l), lw.rope_inv_freq.data());
    const bool want_probs =
        options.observer != nullptr && options.observer->WantsProbs();
    if (want_probs) probs.assign(static_cast<size_t>(nh * n * n), 0.0);
    att.assign(static_cast<size_t>(n * nh * dvo), 0.0);
    const double scale =
        1.0 / std::sqrt(c.query_pre_attn_scalar > 0
                            ? static_cast<double>(c.query_pre_attn_scalar)
                            : static_cast<double>(dqk));
    ReferenceCausalAttention(qr.data(), kr.data(), v.data(), n, nh, nkv, dqk,
                             dvo, scale, att.data(),
                             want_probs ? probs.data() : nullptr, c.window(l));
    ReferenceProject(att, n, lw.o_proj, &out);
    if (options.observer != nullptr) {
      LayerActivations a;
      a.layer = l;
      a.tokens = n;
      a.q = q.data();
      a.k = k.data();
      a.v = v.data();
      a.q_rope = qr.data();
      a.k_rope = kr.data();
      a.probs = want_probs ? probs.data() : nullptr;
      a.residual = x.data();
      a.input = xb.data();
      a.output = out.data();
      options.observer->Observe(a);
    }
    if (c.post_norms) {
      ReferenceRmsNorm(out, dim, lw.post_attn_norm.f32(), eps, &out);
    }
    for (size_t i = 0; i < x.size(); ++i) x[i] += out[i];
    ReferenceAddMlp(lw, dim, eps, &x, c.hidden_act);
  }
  if (!options.logits) return std::vector<double>();
  ReferenceRmsNorm(x, dim, w.final_norm.f32(), eps, &xb);
  Vec logits;
  ReferenceProject(xb, n, w.lm_head, &logits);
  return logits;
}

absl::StatusOr<PerplexityResult> Perplexity(
    const ModelWeights& w, const std::vector<std::vector<int32_t>>& docs) {
  const int64_t vocab = w.config.vocab_size;
  double nll = 0.0;
  int64_t count = 0;
  for (const std::vector<int32_t>& doc : docs) {
    if (doc.size() < 2) continue;
    auto logits = Forward(w, doc);
    if (!logits.ok()) return logits.status();
    for (size_t t = 0; t + 1 < doc.size(); ++t) {
      const double* row = logits->data() + t * vocab;
      const double mx = *std::max_element(row, row + vocab);
      double z = 0.0;
      for (int64_t i = 0; i < vocab; ++i) z += std::exp(row[i] - mx);
      nll += std::log(z) + mx - row[doc[t + 1]];
      ++count;
    }
  }
  if (count == 0) {
    return absl::InvalidArgumentError(
        "perplexity: no document has 2 or more tokens");
  }
  PerplexityResult r;
  r.mean_nll = nll / static_cast<double>(count);
  r.perplexity = std::exp(r.mean_nll);
  r.predicted = count;
  return r;
}

}  // namespace latentkv::model::transform
