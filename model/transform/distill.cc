#include "model/transform/distill.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "model/transform/distill_layer.h"
#include "model/transform/forward.h"

namespace latentkv::model::transform {
namespace {

using Clock = std::chrono::steady_clock;

// Every layer's input and output for each training sequence, in f32.
class Capture : public LayerObserver {
 public:
  Capture(int layers, int64_t hidden)
      : hidden_(hidden), x_(layers), y_(layers) {}
  void Observe(const LayerActivations& a) override {
    const size_t count = static_cast<size_t>(a.tokens * hidden_);
    x_[a.layer].emplace_back(a.input, a.input + count);
    y_[a.layer].emplace_back(a.output, a.output + count);
  }
  // [layer][sequence][tokens * hidden]
  std::vector<std::vector<std::vector<float>>>& x() { return x_; }
  std::vector<std::vector<std::vector<float>>>& y() { return y_; }

 private:
  int64_t hidden_;
  std::vector<std::vector<std::vector<float>>> x_, y_;
};

// Adam over one parameter vector.
struct Adam {
  std::vector<float> m, v;
  void Step(std::vector<float>* p, const std::vector<float>& g, double lr,
            int64_t t) {
    if (m.empty()) m.assign(p->size(), 0.0f), v.assign(p->size(), 0.0f);
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const double c1 = 1.0 - std::pow(b1, static_cast<double>(t));
    const double c2 = 1.0 - std::pow(b2, static_cast<double>(t));
    const float a = static_cast<float>(lr / c1);
    const float ic2 = static_cast<float>(1.0 / c2);
    for (size_t i = 0; i < p->size(); ++i) {
      m[i] = static_cast<float>(b1) * m[i] + static_cast<float>(1 - b1) * g[i];
      v[i] = static_cast<float>(b2) * v[i] +
             static_cast<float>(1 - b2) * g[i] * g[i];
      (*p)[i] -= a * m[i] / (std::sqrt(v[i] * ic2) + static_cast<float>(eps));
    }
  }
};

void Progress(int layer, int layers, double frac, double before, double now,
              double eta) {
  const int width = 24;
  const int done = static_cast<int>(std::clamp(frac, 0.0, 1.0) * width);
  std::string bar(done, '#');
  bar.resize(width, '.');
  std::fprintf(stderr,
               "\rdistill: layer %d/%d [%s] %3.0f%%  rel. error %.4f -> %.4f"
               "  %dm%02ds left   ",
               layer + 1, layers, bar.c_str(), 100 * frac, before, now,
               static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
  std::fflush(stderr);
}

}  // namespace

double RelativeLoss(const DistillShape& s, const LayerParams<float>& p,
                    const std::vector<std::vector<float>>& xs,
                    const std::vector<std::vector<float>>& ys, int64_t hidden) {
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const int64_t n = static_cast<int64_t>(xs[i].size()) / hidden;
    err += LayerLoss(s, p, xs[i].data(), ys[i].data(), n);
    for (float v : ys[i]) norm += static_cast<double>(v) * v;
  }
  return norm > 0 ? err / norm : 0.0;
}

std::vector<std::vector<int32_t>> PackSequences(
    const std::vector<std::vector<int32_t>>& docs, int seq_len) {
  std::vector<std::vector<int32_t>> seqs(1);
  for (const std::vector<int32_t>& d : docs) {
    for (int32_t t : d) {
      if (static_cast<int>(seqs.back().size()) == seq_len) seqs.emplace_back();
      seqs.back().push_back(t);
    }
  }
  if (seqs.back().size() < 2) seqs.pop_back();
  return seqs;
}

DistillShape ShapeOf(const ModelConfig& c, const LatentLayerMaps& m) {
  return DistillShape{static_cast<int>(c.hidden_size),
                      c.num_heads,
                      static_cast<int>(m.k.size()),
                      m.d_qk,
                      m.d_vo,
                      m.rope_dims,
                      m.inv_freq.data()};
}

LayerTrainResult TrainLayer(const DistillShape& shape,
                            const std::vector<std::vector<float>>& xs,
                            const std::vector<std::vector<float>>& ys,
                            const DistillOptions& o, double layer_s, int layer,
                            int layers, std::mt19937_64* rng,
                            AttentionTensors* a) {
  const int64_t hidden = shape.hidden;
  LayerParams<float> p{a->q, a->k, a->v, a->o};
  LayerTrainResult result;
  const double before = RelativeLoss(shape, p, xs, ys, hidden);
  const Clock::time_point layer_start = Clock::now();
  LayerParams<float> g;
  Adam aq, ak, av, ao;
  std::vector<size_t> order(xs.size());
  std::iota(order.begin(), order.end(), 0);
  int64_t seen = 0, step = 0;
  double last_print = -1.0, recent = before;
  for (;;) {
    // A spent wall budget leaves the layer as it is.
    const double tfrac =
        o.minutes > 0
            ? (layer_s > 0 ? SecondsSince(layer_start) / layer_s : 1.0)
            : 0.0;
    const double kfrac =
        o.tokens > 0 ? static_cast<double>(seen) / o.tokens : 0.0;
    const double frac = std::max(tfrac, kfrac);
    if (frac >= 1.0 || order.empty()) break;
    if (step % static_cast<int64_t>(order.size()) == 0) {
      std::shuffle(order.begin(), order.end(), *rng);
    }
    const size_t i = order[step % order.size()];
    const int64_t n = static_cast<int64_t>(xs[i].size()) / hidden;
    g.q.assign(p.q.size(), 0.0f);
    g.k.assign(p.k.size(), 0.0f);
    g.v.assign(p.v.size(), 0.0f);
    g.o.assign(p.o.size(), 0.0f);
    const double loss =
        LayerLossAndGrad(shape, p, xs[i].data(), ys[i].data(), n, &g);
    double norm = 0.0;
    for (float v : ys[i]) norm += static_cast<double>(v) * v;
    if (norm > 0) {
      const float inv = static_cast<float>(1.0 / norm);
      for (auto* gv : {&g.q, &g.k, &g.v, &g.o}) {
        for (float& x : *gv) x *= inv;
      }
      recent = 0.9 * recent + 0.1 * loss / norm;
    }
    const double lr = o.lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * frac)));
    ++step;
    aq.Step(&p.q, g.q, lr, step);
    ak.Step(&p.k, g.k, lr, step);
    av.Step(&p.v, g.v, lr, step);
    ao.Step(&p.o, g.o, lr, step);
    seen += n;
    if (o.progress && SecondsSince(layer_start) - last_print > 0.25) {
      last_print = SecondsSince(layer_start);
      const double per_layer = SecondsSince(layer_start) / std::max(frac, 1e-3);
      const double eta =
          per_layer * (1.0 - frac) + per_layer * (layers - layer - 1);
      Progress(layer, layers, frac, before, recent, eta);
    }
  }
  const double after =
      step > 0 ? RelativeLoss(shape, p, xs, ys, hidden) : before;
  // Keep the trained weights only when they help on the training set.
  if (after < before) {
    a->q = std::move(p.q);
    a->k = std::move(p.k);
    a->v = std::move(p.v);
    a->o = std::move(p.o);
  }
  result.before = before;
  result.after = std::min(after, before);
  result.steps = step;
  return result;
}

absl::StatusOr<DistillReport> DistillLayers(
    const ModelWeights& src, const std::vector<std::vector<int32_t>>& docs,
    const std::vector<LatentLayerMaps>& maps,
    std::vector<AttentionTensors>* tensors, const DistillOptions& o) {
  const ModelConfig& c = src.config;
  const int layers = c.num_layers;
  if (!DistillEnabled(o)) {
    return absl::InvalidArgumentError("distill: give tokens or minutes");
  }
  // The layer forward it trains (distill_layer.h) is Llama's.
  absl::Status usable = CheckLlamaModel(src);
  if (!usable.ok()) return usable;
  if (static_cast<int>(maps.size()) != layers ||
      static_cast<int>(tensors->size()) != layers || docs.empty() ||
      o.seq_len < 2 || !(o.lr > 0)) {
    return absl::InvalidArgumentError(
        "distill: one map and tensor set per layer, documents, seq_len >= 2 "
        "and lr > 0");
  }
  const Clock::time_point start = Clock::now();
  // Sequences: documents concatenated in order, cut at seq_len.
  const int seq_len = std::min(o.seq_len, c.max_position_embeddings);
  std::vector<std::vector<int32_t>> seqs = PackSequences(docs, seq_len);
  if (seqs.empty()) return absl::InvalidArgumentError("distill: no tokens");
  const int64_t hidden = c.hidden_size;
  DistillReport report;
  const int64_t per_token = 8 * hidden * layers;  // x and y in f32
  const size_t fit = static_cast<size_t>(
      std::max<int64_t>(1, o.max_capture_bytes / (per_token * seq_len)));
  if (seqs.size() > fit) {
    report.skipped_sequences = static_cast<int64_t>(seqs.size() - fit);
    seqs.resize(fit);
    if (o.progress) {
      std::fprintf(stderr,
                   "distill: %lld sequences left out (captured activations "
                   "bounded to %lld MiB)\n",
                   static_cast<long long>(report.skipped_sequences),
                   static_cast<long long>(o.max_capture_bytes >> 20));
    }
  }
  Capture cap(layers, hidden);
  absl::Status seen = ObserveLayers(src, seqs, &cap);
  if (!seen.ok()) return seen;
  for (const std::vector<int32_t>& s : seqs) {
    report.train_tokens += static_cast<int64_t>(s.size());
  }
  std::mt19937_64 rng(o.seed);
  const double budget_s = o.minutes * 60.0;
  for (int l = 0; l < layers; ++l) {
    const LatentLayerMaps& m = maps[l];
    AttentionTensors& a = (*tensors)[l];
    const DistillShape shape = ShapeOf(c, m);
    const double layer_s =
        budget_s > 0
            ? std::max(0.0, budget_s - SecondsSince(start)) / (layers - l)
            : 0.0;
    const LayerTrainResult r = TrainLayer(shape, cap.x()[l], cap.y()[l], o,
                                          layer_s, l, layers, &rng, &a);
    report.loss_before.push_back(r.before);
    report.loss_after.push_back(r.after);
    report.steps.push_back(r.steps);
  }
  if (o.progress) std::fprintf(stderr, "\n");
  report.seconds = SecondsSince(start);
  return report;
}

}  // namespace latentkv::model::transform
