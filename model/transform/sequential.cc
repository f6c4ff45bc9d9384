#include "model/transform/sequential.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "model/transform/distill.h"
#include "model/transform/distill_layer.h"
#include "model/transform/forward.h"
#include "model/transform/refit.h"

namespace latentkv::model::transform {
namespace {

using Clock = std::chrono::steady_clock;
using Seqs = std::vector<std::vector<float>>;

// Per layer and sequence, y_l + drift * h_l in f32.
class TargetCapture : public LayerObserver {
 public:
  TargetCapture(int layers, int64_t hidden, double drift)
      : hidden_(hidden), drift_(drift), t_(layers) {}
  void Observe(const LayerActivations& a) override {
    const size_t count = static_cast<size_t>(a.tokens * hidden_);
    std::vector<float> t(count);
    for (size_t i = 0; i < count; ++i) {
      t[i] = static_cast<float>(a.output[i] + drift_ * a.residual[i]);
    }
    t_[a.layer].push_back(std::move(t));
  }
  std::vector<Seqs>& targets() { return t_; }

 private:
  int64_t hidden_;
  double drift_;
  std::vector<Seqs> t_;  // [layer][sequence][tokens * hidden]
};

// The W_o ridge refit of one layer on the stream's inputs xs and targets ys.
absl::Status Refit(const DistillShape& shape, const Seqs& xs, const Seqs& ys,
                   double ridge, AttentionTensors* a) {
  const LayerParams<float> p{a->q, a->k, a->v, a->o};
  const int hidden = shape.hidden, dim = shape.heads * shape.d_vo;
  std::vector<double> g(static_cast<size_t>(dim) * dim, 0.0);
  std::vector<double> r(static_cast<size_t>(hidden) * dim, 0.0);
  std::vector<float> out, z;
  for (size_t i = 0; i < xs.size(); ++i) {
    const int n = static_cast<int>(xs[i].size() / hidden);
    LayerForward(shape, p, xs[i].data(), n, &out, &z);
    const std::vector<double> zd(z.begin(), z.end());
    const std::vector<double> yd(ys[i].begin(), ys[i].end());
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim, n, 1.0,
                zd.data(), dim, zd.data(), dim, 1.0, g.data(), dim);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hidden, dim, n, 1.0,
                yd.data(), hidden, zd.data(), dim, 1.0, r.data(), dim);
  }
  return SolveOutputRidge(g, r, dim, hidden, ridge, &a->o);
}

}  // namespace

absl::StatusOr<SequentialReport> SequentialFit(
    const ModelWeights& src, const std::vector<std::vector<int32_t>>& given,
    const std::vector<LatentLayerMaps>& maps,
    std::vector<AttentionTensors>* tensors, const SequentialOptions& o) {
  const ModelConfig& c = src.config;
  const int layers = c.num_layers;
  if (static_cast<int>(maps.size()) != layers ||
      static_cast<int>(tensors->size()) != layers || given.empty() ||
      !(o.ridge > 0) || !(o.drift >= 0)) {
    return absl::InvalidArgumentError(
        "sequential fit: one map and tensor set per layer, sequences, ridge > "
        "0 and drift >= 0");
  }
  absl::Status usable = CheckLlamaModel(src);
  if (!usable.ok()) return usable;
  for (const std::vector<int32_t>& seq : given) {
    if (seq.empty() ||
        static_cast<int64_t>(seq.size()) > c.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequential fit: sequences need 1..",
                       c.max_position_embeddings, " tokens"));
    }
    for (int32_t t : seq) {
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sequential fit: token ", t, " outside the vocabulary"));
      }
    }
  }
  const Clock::time_point start = Clock::now();
  const int64_t hidden = c.hidden_size;
  SequentialReport report;
  std::vector<std::vector<int32_t>> seqs = given;
  const int64_t per_token = 4 * hidden * layers;
  int64_t kept_tokens = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    kept_tokens += static_cast<int64_t>(seqs[i].size());
    if (i > 0 && kept_tokens * per_token > o.max_capture_bytes) {
      report.skipped_sequences = static_cast<int64_t>(seqs.size() - i);
      seqs.resize(i);
      break;
    }
  }
  if (report.skipped_sequences > 0 && o.distill.progress) {
    std::fprintf(stderr,
                 "sequential fit: %lld sequences left out (targets bounded "
                 "to %lld MiB)\n",
                 static_cast<long long>(report.skipped_sequences),
                 static_cast<long long>(o.max_capture_bytes >> 20));
  }
  const bool on_stream = o.target == SequentialTarget::kSourceOnStream;
  TargetCapture cap(layers, hidden, o.drift);
  if (on_stream) {
    cap.targets().assign(layers, Seqs(seqs.size()));
  } else {
    absl::Status seen = ObserveLayers(src, seqs, &cap);
    if (!seen.ok()) return seen;
  }
  // The converted stream h' starts at the embeddings.
  Seqs h(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    report.tokens += static_cast<int64_t>(seqs[i].size());
    h[i].resize(seqs[i].size() * hidden);
    for (size_t t = 0; t < seqs[i].size(); ++t) {
      const float* e = src.embed_tokens.f32() + seqs[i][t] * hidden;
      std::copy(e, e + hidden, h[i].begin() + t * hidden);
    }
  }
  std::mt19937_64 rng(o.distill.seed);
  const bool train = DistillEnabled(o.distill);
  const double budget_s = o.distill.minutes * 60.0;
  double overhead_s = 0.0;  // refit and stream time of the layers so far
  Seqs xs(seqs.size());
  std::vector<float> out;
  for (int l = 0; l < layers; ++l) {
    const Clock::time_point layer_start = Clock::now();
    const LayerWeights& lw = src.layers[l];
    AttentionTensors& a = (*tensors)[l];
    const DistillShape shape = ShapeOf(c, maps[l]);
    Seqs& ys = cap.targets()[l];
    const LayerParams<float> source =
        on_stream ? LayerParams<float>{F32Copy(lw.q_proj), F32Copy(lw.k_proj),
                                       F32Copy(lw.v_proj), F32Copy(lw.o_proj)}
                  : LayerParams<float>{};
    const DistillShape source_shape{static_cast<int>(hidden), c.num_heads,
                                    c.num_kv_heads,           c.qk_head_dim[l],
                                    c.vo_head_dim[l],         c.rope_dim(l),
                                    lw.rope_inv_freq.data()};
    for (size_t i = 0; i < seqs.size(); ++i) {
      ReferenceRmsNorm(h[i], hidden, lw.attn_norm.f32(), c.rms_norm_eps,
                       &xs[i]);
      if (on_stream) {
        LayerForward<float>(source_shape, source, xs[i].data(),
                            static_cast<int64_t>(seqs[i].size()), &ys[i],
                            nullptr);
      } else if (o.drift > 0) {
        for (size_t j = 0; j < ys[i].size(); ++j) {
          ys[i][j] -= static_cast<float>(o.drift) * h[i][j];
        }
      }
    }
    report.loss_init.push_back(
        RelativeLoss(shape, {a.q, a.k, a.v, a.o}, xs, ys, hidden));
    if (o.refit) {
      absl::Status s = Refit(shape, xs, ys, o.ridge, &a);
      if (!s.ok()) return s;
    }
    report.loss_refit.push_back(
        o.refit ? RelativeLoss(shape, {a.q, a.k, a.v, a.o}, xs, ys, hidden)
                : report.loss_init.back());
    double train_s = 0.0;
    if (train) {
      // What is left of the budget, less the stream's expected cost for the
      // remaining layers, split evenly over them.
      const double per_layer_overhead =
          (overhead_s + SecondsSince(layer_start)) / (l + 1);
      const double layer_s =
          budget_s > 0 ? std::max(0.0, budget_s - SecondsSince(start) -
                                           per_layer_overhead * (layers - l)) /
                             (layers - l)
                       : 0.0;
      const Clock::time_point train_start = Clock::now();
      const LayerTrainResult r =
          TrainLayer(shape, xs, ys, o.distill, layer_s, l, layers, &rng, &a);
      train_s = SecondsSince(train_start);
      report.loss_after.push_back(r.after);
    } else {
      report.loss_after.push_back(report.loss_refit.back());
    }
    // Move the stream past the layer: its converted attention, the source
    // MLP.
    const LayerParams<float> p{a.q, a.k, a.v, a.o};
    for (size_t i = 0; i < seqs.size(); ++i) {
      LayerForward<float>(shape, p, xs[i].data(),
                          static_cast<int64_t>(seqs[i].size()), &out, nullptr);
      for (size_t j = 0; j < out.size(); ++j) h[i][j] += out[j];
      ReferenceAddMlp(lw, hidden, c.rms_norm_eps, &h[i]);
    }
    Seqs().swap(ys);  // this layer's targets are done
    overhead_s += SecondsSince(layer_start) - train_s;
  }
  if (train && o.distill.progress) std::fprintf(stderr, "\n");
  report.seconds = SecondsSince(start);
  return report;
}

}  // namespace latentkv::model::transform
