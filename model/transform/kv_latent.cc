#include "model/transform/kv_latent.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "model/transform/eigen.h"
#include "model/transform/gguf_convert.h"
#include "model/transform/latent_maps.h"
#include "model/transform/refit.h"

namespace latentkv::model::transform {
namespace {

// Copies row `from` of a row-major [*, cols] matrix, times `scale`, into row
// `to` of `dst`.
void CopyRow(const float* src, int64_t from, int64_t cols, float scale,
             std::vector<float>* dst, int64_t to) {
  for (int64_t c = 0; c < cols; ++c) {
    (*dst)[to * cols + c] = src[from * cols + c] * scale;
  }
}

absl::Status CheckLayerDims(const ModelConfig& c, int l, int d_qk, int d_vo) {
  if (d_qk <= 0 || d_vo <= 0 || d_qk % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv-latent: d_qk must be a positive even number (rotary pairs) and "
        "d_vo positive; got d_qk=",
        d_qk, " d_vo=", d_vo, " (layer ", l, ")"));
  }
  if (d_qk > c.qk_head_dim[l] || d_vo > c.vo_head_dim[l]) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv-latent: layer ", l, " has d_qk=", c.qk_head_dim[l], " d_vo=",
        c.vo_head_dim[l], "; cannot grow to d_qk=", d_qk, " d_vo=", d_vo));
  }
  return absl::OkStatus();
}

absl::Status CheckSource(const ModelConfig& c) {
  if (!c.rope_dims.empty()) {
    // The inits below read every key channel as part of a rotary pair.
    return absl::UnimplementedError(
        "kv-latent: the source model already has partial rotary (rope_dims); "
        "convert the original model instead");
  }
  return absl::OkStatus();
}

absl::Status CheckDims(const ModelConfig& c, int d_qk, int d_vo) {
  absl::Status s = CheckSource(c);
  for (int l = 0; s.ok() && l < c.num_layers; ++l) {
    s = CheckLayerDims(c, l, d_qk, d_vo);
  }
  return s;
}

// Models whose q/k norms act on the whole source head (Gemma 3): the latent
// key/query maps go after the norms (ModelConfig::qk_norm_dim); what needs
// Llama's layer (distillation, sequential fitting, rank allocation,
// cross-head latents over several KV heads, the strided init) is refused.
absl::Status CheckNormedSource(const ModelConfig& c,
                               const KvLatentOptions& options) {
  if (options.init == KvLatentInit::kStrided || options.sequential ||
      DistillEnabled(options.distill)) {
    return absl::UnimplementedError(
        "kv-latent: this model normalizes its q/k heads (Gemma 3): only the "
        "calibrated init with the output refit is supported (no --init "
        "strided, --sequential or distillation)");
  }
  if (options.joint_heads && c.num_kv_heads > 1) {
    return absl::UnimplementedError(
        "kv-latent: cross-head latents of a model with q/k norms: give "
        "--joint_heads=false (per-head maps after the norms)");
  }
  for (int l = 1; l < c.num_layers; ++l) {
    if (c.qk_head_dim[l] != c.qk_head_dim[0]) {
      return absl::UnimplementedError(
          "kv-latent: q/k norms over heads of different widths per layer");
    }
  }
  // The maps keep q.k / sqrt(source head) and the new config scales by
  // 1/sqrt(d_qk): the source must scale by 1/sqrt(its head width).
  if (c.query_pre_attn_scalar != 0.0f &&
      c.query_pre_attn_scalar != static_cast<float>(c.qk_head_dim[0])) {
    return absl::UnimplementedError(absl::StrCat(
        "kv-latent: query_pre_attn_scalar ", c.query_pre_attn_scalar,
        " differs from the head width ", c.qk_head_dim[0]));
  }
  return absl::OkStatus();
}

// Per-head maps [heads][rows * cols] (double) stacked as one f32 tensor.
std::vector<float> StackMaps(const std::vector<std::vector<double>>& maps) {
  std::vector<float> out;
  for (const std::vector<double>& m : maps)
    out.insert(out.end(), m.begin(), m.end());
  return out;
}

ModelConfig LatentConfig(const ModelConfig& src, int d_qk, int d_vo) {
  ModelConfig c = src;
  c.qk_head_dim.assign(src.num_layers, d_qk);
  c.vo_head_dim.assign(src.num_layers, d_vo);
  return c;
}

// The value maps of one KV head: A [d_vo, hv] and B [hv, d_vo] with
// W_v' = A W_v(head) and W_o'[:, h] = W_o[:, h] B for its query heads
// first_head .. first_head + heads - 1 of `layer`. `moment` is E[v v^T]
// [hv, hv].
absl::Status ValueMaps(const std::vector<double>& moment, const ModelWeights& w,
                       int layer, int first_head, int heads, int hv, int d_vo,
                       ValueBasis basis, std::vector<double>* a,
                       std::vector<double>* b) {
  a->assign(static_cast<size_t>(d_vo) * hv, 0.0);
  b->assign(static_cast<size_t>(hv) * d_vo, 0.0);
  if (basis == ValueBasis::kPca) {
    auto eig = TopEigenSymmetric(moment, hv, d_vo);
    if (!eig.ok()) return eig.status();
    for (int i = 0; i < hv; ++i) {
      for (int c = 0; c < d_vo; ++c) {
        (*a)[c * hv + i] = (*b)[i * d_vo + c] = eig->vectors[i * d_vo + c];
      }
    }
    return absl::OkStatus();
  }
  // S = sum_h W_o,h^T W_o,h, and S^(1/2), S^(-1/2) from its eigenpairs.
  const std::vector<double> sm = OutputMetric(w, layer, first_head, heads);
  auto roots = SymmetricSquareRoots(sm, hv);
  if (!roots.ok()) return roots.status();
  const std::vector<double>& sh = roots->sqrt;
  const std::vector<double>& sih = roots->inv_sqrt;
  // M = S^1/2 C S^1/2; its top eigenvectors V [hv, d_vo].
  const std::vector<double> m =
      DenseProduct(DenseProduct(sh, moment, hv, hv, hv), sh, hv, hv, hv);
  auto me = TopEigenSymmetric(m, hv, d_vo);
  if (!me.ok()) return me.status();
  for (int c = 0; c < d_vo; ++c) {
    for (int i = 0; i < hv; ++i) {
      for (int k = 0; k < hv; ++k) {
        const double vk = me->vectors[k * d_vo + c];
        (*a)[c * hv + i] += vk * sh[k * hv + i];     // A = V^T S^1/2
        (*b)[i * d_vo + c] += sih[i * hv + k] * vk;  // B = S^-1/2 V
      }
    }
  }
  return absl::OkStatus();
}

// Source KV heads per cross-head latent (options.joint_group, 0: all).
int JointSpan(const ModelConfig& c, const KvLatentOptions& options) {
  return options.joint_group > 0 ? options.joint_group : c.num_kv_heads;
}

// The cross-head maps of every layer (joint_latent.h), `dims` each layer's
// joint d_qk / d_vo per latent head (G times the per-head bytes,
// G = `group` source heads per latent, 0: all); `stats` with the joint
// moments.
absl::StatusOr<std::vector<LatentLayerMaps>> JointMaps(
    const ModelWeights& w, const std::vector<LayerStats>& stats,
    const std::vector<std::vector<int>>& kept,
    const std::vector<LayerRanks>& dims, int group) {
  std::vector<LatentLayerMaps> out;
  for (int l = 0; l < w.config.num_layers; ++l) {
    auto m = BuildJointLayerMaps(w, l, stats[l], kept[l], dims[l].d_qk,
                                 dims[l].d_vo, group);
    if (!m.ok()) return m.status();
    out.push_back(std::move(*m));
  }
  return out;
}

// Per-layer dims by rank allocation (rank_allocation.h) under the KV budget
// of the uniform d_qk / d_vo: `kept[c][l]` the rotary pairs of layer l under
// candidate c. Each result's `candidate` says whose pairs the layer keeps.
absl::StatusOr<std::vector<LayerRanks>> AllocatedDims(
    const ModelWeights& w, const std::vector<std::vector<int32_t>>& docs,
    const std::vector<LayerStats>& stats,
    const std::vector<std::vector<std::vector<int>>>& kept,
    const KvLatentOptions& options) {
  const ModelConfig& c = w.config;
  // Cross-head dims span every source KV head.
  const int heads = options.joint_heads ? JointSpan(c, options) : 1;
  std::vector<LayerRanks> full;
  for (int l = 0; l < c.num_layers; ++l) {
    full.push_back({heads * c.qk_head_dim[l], heads * c.vo_head_dim[l]});
  }
  std::vector<std::vector<LatentLayerMaps>> candidates;
  for (const std::vector<std::vector<int>>& pairs : kept) {
    auto maps =
        options.joint_heads
            ? JointMaps(w, stats, pairs, full, options.joint_group)
            : CalibratedMaps(w, stats, pairs, full, options.value_basis);
    if (!maps.ok()) return maps.status();
    candidates.push_back(std::move(*maps));
  }
  auto curves =
      MeasureErrorCurves(w, docs, candidates, options.allocation_tokens);
  if (!curves.ok()) return curves.status();
  const int64_t budget =
      int64_t{c.num_layers} * heads * (options.d_qk + options.d_vo);
  auto ranks = AllocateRanks(*curves, budget, options.allocation_weight);
  if (!ranks.ok()) return ranks.status();
  std::string line;
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerRanks& r = (*ranks)[l];
    absl::StrAppend(&line, l == 0 ? "" : " ", r.d_qk, "/", r.d_vo, "(",
                    heads * 2 * kept[r.candidate][l].size(), ")");
  }
  std::fprintf(stderr,
               "rank allocation (d_qk/d_vo(rotary dims) per layer): %s\n",
               line.c_str());
  return ranks;
}

// The rotary-dims candidates of an allocation: d_qk/2, the default 3/4 and
// d_qk (each even, at most every layer's source width; distinct).
std::vector<int> RopeCandidates(const ModelConfig& c, int d_qk) {
  int most = d_qk;
  for (int l = 0; l < c.num_layers; ++l)
    most = std::min(most, c.qk_head_dim[l]);
  std::vector<int> out;
  for (int r : {d_qk / 4 * 2, DefaultRopeDims(d_qk), d_qk}) {
    r = std::min(r, most) / 2 * 2;
    if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<AttentionTensors>> StridedAttention(
    const ModelWeights& w, int d_qk, int d_vo) {
  const ModelConfig& c = w.config;
  absl::Status s = CheckDims(c, d_qk, d_vo);
  if (!s.ok()) return s;
  if (d_qk % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv-latent strided: d_qk=", d_qk,
        " is not a multiple of 4, which the frequency-aware RoPE table of "
        "the strided init needs (d_qk/2 pairs split into two halves); use "
        "--init calibrated"));
  }
  const int64_t h = c.hidden_size;
  const int nh = c.num_heads, nkv = c.num_kv_heads;
  std::vector<AttentionTensors> out(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const int hq = c.qk_head_dim[l], hv = c.vo_head_dim[l];
    if (hq % d_qk != 0 || hv % d_vo != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kv-latent strided: layer ", l, ": the ratios hs/d (d_qk ", hq, "/",
          d_qk, ", d_vo ", hv, "/", d_vo,
          ") must be integers; for Q/K the ratio must divide hs/2 = ", hq / 2,
          " so rotary pairs stay pairs"));
    }
    const int rq = hq / d_qk, rv = hv / d_vo;
    const LayerWeights& lw = w.layers[l];
    AttentionTensors& a = out[l];
    a.q.resize(static_cast<size_t>(nh) * d_qk * h);
    a.k.resize(static_cast<size_t>(nkv) * d_qk * h);
    a.v.resize(static_cast<size_t>(nkv) * d_vo * h);
    a.o.resize(static_cast<size_t>(nh) * d_vo * h);
    for (int head = 0; head < nh; ++head) {
      for (int i = 0; i < d_qk; ++i) {
        CopyRow(lw.q_proj.f32(), int64_t{head} * hq + i * rq, h, 1.0f, &a.q,
                int64_t{head} * d_qk + i);
      }
    }
    for (int head = 0; head < nkv; ++head) {
      for (int i = 0; i < d_qk; ++i) {
        CopyRow(lw.k_proj.f32(), int64_t{head} * hq + i * rq, h, 1.0f, &a.k,
                int64_t{head} * d_qk + i);
      }
      for (int i = 0; i < d_vo; ++i) {
        CopyRow(lw.v_proj.f32(), int64_t{head} * hv + i * rv, h, 1.0f, &a.v,
                int64_t{head} * d_vo + i);
      }
    }
    const float* o = lw.o_proj.f32();
    const int64_t old_cols = int64_t{nh} * hv, new_cols = int64_t{nh} * d_vo;
    for (int64_t r = 0; r < h; ++r) {
      for (int head = 0; head < nh; ++head) {
        for (int i = 0; i < d_vo; ++i) {
          a.o[r * new_cols + head * d_vo + i] =
              o[r * old_cols + head * hv + i * rv];
        }
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<LatentLayerMaps>> CalibratedMaps(
    const ModelWeights& w, const std::vector<LayerStats>& stats,
    const std::vector<std::vector<int>>& kept_all,
    const std::vector<LayerRanks>& dims, ValueBasis basis) {
  const ModelConfig& c = w.config;
  if (static_cast<int>(stats.size()) != c.num_layers ||
      static_cast<int>(kept_all.size()) != c.num_layers ||
      static_cast<int>(dims.size()) != c.num_layers) {
    return absl::InvalidArgumentError(
        "calibrated: one LayerStats, one kept-pair list and one dims per "
        "layer");
  }
  absl::Status s = CheckSource(c);
  if (!s.ok()) return s;
  const int nh = c.num_heads, nkv = c.num_kv_heads, group = nh / nkv;
  std::vector<LatentLayerMaps> out(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerStats& st = stats[l];
    const std::vector<int>& kept = kept_all[l];
    const int hq = c.qk_head_dim[l], hv = c.vo_head_dim[l];
    const int d_qk = dims[l].d_qk, d_vo = dims[l].d_vo;
    s = CheckLayerDims(c, l, d_qk, d_vo);
    if (!s.ok()) return s;
    if (st.group_size != 1 || st.d_qk != hq || st.d_vo != hv ||
        static_cast<int>(st.v_moment.size()) != nkv) {
      return absl::InvalidArgumentError(absl::StrCat(
          "calibrated: layer ", l, " statistics do not match the model"));
    }
    LatentLayerMaps& m = out[l];
    s = BuildKeyMaps(w, l, st, kept, d_qk, &m);  // checks `kept`
    if (!s.ok()) return s;
    // V/O: per KV head W_v' = A W_v(head), W_o'[:, h] = W_o[:, h] B.
    m.d_vo = d_vo;
    m.v.resize(nkv);
    m.o.resize(nh);
    for (int kvh = 0; kvh < nkv; ++kvh) {
      std::vector<double> am, bm;
      s = ValueMaps(st.v_moment[kvh], w, l, kvh * group, group, hv, d_vo, basis,
                    &am, &bm);
      if (!s.ok()) return s;
      m.v[kvh] = std::move(am);
      for (int head = kvh * group; head < (kvh + 1) * group; ++head) {
        m.o[head] = bm;
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<LatentLayerMaps>> CalibratedMaps(
    const ModelWeights& w, const std::vector<LayerStats>& stats,
    const std::vector<std::vector<int>>& kept_all, int d_qk, int d_vo,
    ValueBasis basis) {
  absl::Status s = CheckDims(w.config, d_qk, d_vo);
  if (!s.ok()) return s;
  return CalibratedMaps(
      w, stats, kept_all,
      std::vector<LayerRanks>(w.config.num_layers, LayerRanks{d_qk, d_vo}),
      basis);
}

absl::StatusOr<std::vector<AttentionTensors>> CalibratedAttention(
    const ModelWeights& w, const std::vector<LayerStats>& stats,
    const std::vector<std::vector<int>>& kept_all, int d_vo, ValueBasis basis) {
  if (kept_all.empty()) {
    return absl::InvalidArgumentError("calibrated: no layers");
  }
  const int d_qk = 2 * static_cast<int>(kept_all[0].size());
  for (const std::vector<int>& kept : kept_all) {
    if (2 * static_cast<int>(kept.size()) != d_qk) {
      return absl::InvalidArgumentError(
          "calibrated: every layer keeps the same number of pairs");
    }
  }
  auto maps = CalibratedMaps(w, stats, kept_all, d_qk, d_vo, basis);
  if (!maps.ok()) return maps.status();
  std::vector<AttentionTensors> out;
  for (int l = 0; l < w.config.num_layers; ++l) {
    out.push_back(ApplyLayerMaps(w, l, (*maps)[l]));
  }
  return out;
}

namespace {

// The distillation's documents: distill_text, read from the calibration
// file unless it names its own.
absl::StatusOr<std::vector<std::vector<int32_t>>> DistillDocs(
    const std::string& model_dir, const ModelConfig& src,
    const KvLatentOptions& options) {
  CalibrationTextOptions dt = options.distill_text;
  if (dt.path.empty()) dt.path = options.calibration.path;
  return LoadCalibrationDocs(model_dir, src, dt);
}

// The local refit and distillation (refit.h, distill.h): every layer on
// the source model's hidden states.
absl::Status FitLocally(const ModelWeights& w, const std::string& model_dir,
                        const std::vector<std::vector<int32_t>>& docs,
                        const std::vector<LatentLayerMaps>& maps,
                        const KvLatentOptions& options,
                        std::vector<AttentionTensors>* tensors) {
  const ModelConfig& src = w.config;
  if (options.refit_output) {
    RefitOptions ro;
    ro.ridge = options.refit_ridge;
    absl::Status s = RefitOutputProjections(w, docs, maps, tensors, ro);
    if (!s.ok()) return s;
  }
  if (DistillEnabled(options.distill)) {
    auto train = DistillDocs(model_dir, src, options);
    if (!train.ok()) return train.status();
    auto report = DistillLayers(w, *train, maps, tensors, options.distill);
    if (!report.ok()) return report.status();
    double before = 0, after = 0;
    for (size_t l = 0; l < report->loss_before.size(); ++l) {
      before += report->loss_before[l];
      after += report->loss_after[l];
    }
    const double layers = static_cast<double>(report->loss_before.size());
    std::fprintf(stderr,
                 "distill: %lld training tokens, %.0f s; mean relative "
                 "error per layer %.4f -> %.4f\n",
                 static_cast<long long>(report->train_tokens), report->seconds,
                 before / layers, after / layers);
  }
  return absl::OkStatus();
}

// sequential.h's fit: on the distillation's sequences when it trains, else
// on the calibration documents.
absl::Status FitSequentially(const ModelWeights& w,
                             const std::string& model_dir,
                             const std::vector<std::vector<int32_t>>& docs,
                             const std::vector<LatentLayerMaps>& maps,
                             const KvLatentOptions& options,
                             std::vector<AttentionTensors>* tensors) {
  const ModelConfig& src = w.config;
  SequentialOptions so;
  so.refit = options.refit_output;
  so.ridge = options.refit_ridge;
  so.drift = options.drift;
  so.target = options.sequential_target;
  so.distill = options.distill;
  std::vector<std::vector<int32_t>> seqs = docs;
  if (DistillEnabled(options.distill)) {
    auto train = DistillDocs(model_dir, src, options);
    if (!train.ok()) return train.status();
    seqs = PackSequences(
        *train, std::min(options.distill.seq_len, src.max_position_embeddings));
  }
  auto report = SequentialFit(w, seqs, maps, tensors, so);
  if (!report.ok()) return report.status();
  const double layers = static_cast<double>(report->loss_init.size());
  double init = 0, refit = 0, after = 0;
  for (size_t l = 0; l < report->loss_init.size(); ++l) {
    init += report->loss_init[l] / layers;
    refit += report->loss_refit[l] / layers;
    after += report->loss_after[l] / layers;
  }
  std::fprintf(stderr,
               "sequential fit: %lld tokens, %.0f s; mean relative error per "
               "layer %.4f (maps) -> %.4f (refit) -> %.4f (trained)\n",
               static_cast<long long>(report->tokens), report->seconds, init,
               refit, after);
  return absl::OkStatus();
}

}  // namespace

absl::Status ConvertKvLatent(const std::string& model_dir,
                             const std::string& out_dir,
                             const KvLatentOptions& options) {
  auto w = LoadSourceModel(model_dir);
  if (!w.ok()) return w.status();
  const ModelConfig& src = (*w)->config;
  absl::StatusOr<std::vector<AttentionTensors>> attn;
  ModelConfig config = LatentConfig(src, options.d_qk, options.d_vo);
  std::string tag;
  const bool after_norms = src.qk_norm;
  if (after_norms) {
    absl::Status s = CheckNormedSource(src, options);
    if (!s.ok()) return s;
  }
  if (options.init == KvLatentInit::kStrided) {
    if (options.rope_dims >= 0 || DistillEnabled(options.distill)) {
      return absl::InvalidArgumentError(
          "kv-latent: --init strided keeps the paper's init: no rope=, no "
          "distillation (use --init calibrated)");
    }
    attn = StridedAttention(**w, options.d_qk, options.d_vo);
    config.rope_scheme = RopeScheme::kFrequencyAware;
    tag = "latentkv kv-latent strided";
  } else {
    absl::Status s = CheckDims(src, options.d_qk, options.d_vo);
    if (!s.ok()) return s;
    if (options.calibration.path.empty()) {
      return absl::InvalidArgumentError(
          "kv-latent calibrated init needs calibration text (--calib-text "
          "FILE)");
    }
    if (options.joint_heads &&
        (options.joint_group < 0 ||
         (options.joint_group > 0 &&
          src.num_kv_heads % options.joint_group != 0))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kv-latent: --joint_group ", options.joint_group,
          " must divide the model's ", src.num_kv_heads, " KV heads (0: all)"));
    }
    auto docs = LoadCalibrationDocs(model_dir, src, options.calibration);
    if (!docs.ok()) return docs.status();
    // The fits' own attention (refit, statistics) sees no sliding window:
    // documents no longer than the shortest window keep them exact.
    int window = 0;
    for (int l = 0; l < src.num_layers; ++l) {
      const int wl = src.window(l);
      if (wl > 0) window = window == 0 ? wl : std::min(window, wl);
    }
    for (std::vector<int32_t>& doc : *docs) {
      if (window > 0 && static_cast<int>(doc.size()) > window)
        doc.resize(window);
    }
    const int rope = options.rope_dims < 0 ? DefaultRopeDims(options.d_qk)
                                           : options.rope_dims;
    if (rope % 2 != 0 || rope > options.d_qk) {
      return absl::InvalidArgumentError(
          absl::StrCat("kv-latent: rope=", rope,
                       " must be even and at most d_qk=", options.d_qk));
    }
    // Allocation without rope= tries several splits (per-head latents),
    // keeping pairs by the rotation score in each (auto).
    const bool allocate =
        !after_norms &&
        (options.joint_heads ? options.allocate_joint : options.allocate_ranks);
    // After the norms the maps are per KV head (one KV head: the same).
    const bool joint = options.joint_heads && !after_norms;
    const std::vector<int> ropes = allocate && options.rope_dims < 0 && !joint
                                       ? RopeCandidates(src, options.d_qk)
                                       : std::vector<int>{rope};
    PairCriterion crit = options.pair_criterion;
    if (crit == PairCriterion::kAuto) {
      // The output search runs Llama's layer: normed sources use the score.
      crit = rope < options.d_qk || ropes.size() > 1 || after_norms
                 ? PairCriterion::kRotation
                 : PairCriterion::kOutputSearch;
    }
    CalibrationOptions co;
    co.attention_scores = crit == PairCriterion::kLogitVariance ||
                          crit == PairCriterion::kAttentionMagnitude;
    co.kv_joint_moment = joint;
    auto stats = Calibrate(**w, *docs, co);
    if (!stats.ok()) return stats.status();
    std::vector<std::vector<std::vector<int>>> kept_by_rope;
    for (int r : ropes) {
      std::vector<std::vector<int>> kept;
      if (crit == PairCriterion::kOutputSearch && r > 0) {
        auto found = SearchRotaryPairs(**w, *docs, r, options.search);
        if (!found.ok()) return found.status();
        kept = std::move(*found);
      } else {
        for (int l = 0; l < src.num_layers; ++l) {
          kept.push_back(
              crit == PairCriterion::kRotation
                  ? TopPairs(RotationPairScores((*stats)[l],
                                                (*w)->layers[l].rope_inv_freq,
                                                options.rotation_distance),
                             r / 2)
                  : SelectRotaryPairs((*stats)[l], r, crit));
        }
      }
      kept_by_rope.push_back(std::move(kept));
    }
    std::vector<std::vector<int>> kept = kept_by_rope[0];
    const int heads = joint ? JointSpan(src, options) : 1;
    std::vector<LayerRanks> dims(
        src.num_layers, LayerRanks{heads * options.d_qk, heads * options.d_vo});
    if (allocate) {
      auto found = AllocatedDims(**w, *docs, *stats, kept_by_rope, options);
      if (!found.ok()) return found.status();
      dims = std::move(*found);
      for (int l = 0; l < src.num_layers; ++l) {
        kept[l] = kept_by_rope[dims[l].candidate][l];
      }
    }
    auto maps =
        joint ? JointMaps(**w, *stats, kept, dims, options.joint_group)
              : CalibratedMaps(**w, *stats, kept, dims, options.value_basis);
    if (!maps.ok()) return maps.status();
    if (joint) config.num_kv_heads = src.num_kv_heads / heads;
    std::vector<AttentionTensors> tensors;
    for (int l = 0; l < src.num_layers; ++l) {
      tensors.push_back(ApplyLayerMaps(**w, l, (*maps)[l]));
    }
    if (options.sequential) {
      s = FitSequentially(**w, model_dir, *docs, *maps, options, &tensors);
      if (!s.ok()) return s;
    } else {
      s = FitLocally(**w, model_dir, *docs, *maps, options, &tensors);
      if (!s.ok()) return s;
    }
    if (after_norms) {
      // The source's projections and norms stay; the query/key maps go
      // after the norms. The maps keep q.k / sqrt(source head width) at the
      // new config's scale 1/sqrt(d_qk).
      for (int l = 0; l < src.num_layers; ++l) {
        tensors[l].q = F32Copy((*w)->layers[l].q_proj);
        tensors[l].k = F32Copy((*w)->layers[l].k_proj);
        tensors[l].q_latent = StackMaps((*maps)[l].q);
        tensors[l].k_latent = StackMaps((*maps)[l].k);
      }
      config.qk_norm_dim = src.qk_head_dim[0];
      config.query_pre_attn_scalar = 0.0f;
    }
    attn = std::move(tensors);
    // Every layer carries its own rotary_inv_freq tensor.
    config.rope_scheme = RopeScheme::kStandard;
    // The dims and split each layer's maps were built with.
    std::vector<int> rope_dims;
    bool partial = false;
    for (int l = 0; l < src.num_layers; ++l) {
      config.qk_head_dim[l] = (*maps)[l].d_qk;
      config.vo_head_dim[l] = (*maps)[l].d_vo;
      rope_dims.push_back((*maps)[l].rope_dims);
      partial = partial || rope_dims[l] != (*maps)[l].d_qk;
    }
    if (partial) config.rope_dims = std::move(rope_dims);
    tag = "latentkv kv-latent calibrated";
  }
  if (!attn.ok()) return attn.status();
  absl::Status written =
      WriteConvertedModel(**w, model_dir, config, *attn, out_dir, options.dtype,
                          tag, /*copy_tokenizer=*/(*w)->gguf == nullptr);
  if (!written.ok()) return written;
  return WriteModelTokenizer(**w, out_dir);
}

}  // namespace latentkv::model::transform
