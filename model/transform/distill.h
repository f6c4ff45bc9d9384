// Local distillation of converted attention layers (KV-Latent's Stage I,
// arXiv 2507.11273, whose code was never published): per layer, only the
// converted layer's four projections train, so that its attention output
// matches the source layer's given the SOURCE model's hidden states; layers
// are independent (no error carried from one to the next; sequential.h is
// the form that carries it, sharing TrainLayer).
//
// Data: the training documents are concatenated in order into sequences of
// up to seq_len tokens and run once through the source model (forward.h);
// each layer's normed input x and attention output y are kept in f32
// (tokens * hidden * 2 * 4 bytes per layer). Training: per layer, Adam on
// one sequence per step, loss |out - y|^2 / |y|^2 over the sequence, the
// learning rate decaying along a cosine to 10% over the layer's budget;
// gradients analytic (distill_layer.h, checked against finite differences
// in the tests).
//
// Budget: `tokens` per layer, or `minutes` of wall time for all layers
// (split evenly), whichever is set (both: the first reached). A progress
// bar with the time left goes to stderr.
#ifndef LATENTKV_MODEL_TRANSFORM_DISTILL_H_
#define LATENTKV_MODEL_TRANSFORM_DISTILL_H_

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "model/transform/distill_layer.h"
#include "model/transform/latent_maps.h"
#include "model/transform/model_writer.h"
#include "model/weights.h"

namespace latentkv::model::transform {

// Wall seconds since `start` (the time budgets of distillation and
// sequential fitting).
inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

struct DistillOptions {
  int64_t tokens = 0;    // training tokens per layer; 0: no token bound
  double minutes = 0;    // wall-time bound for all layers; 0: none
  int seq_len = 256;     // training sequence length (<= the model's context)
  double lr = 2e-4;      // Adam's peak learning rate
  bool progress = true;  // progress bar on stderr
  uint64_t seed = 1;     // sequence order
  // Bound on the captured activations (8 bytes per token, hidden unit and
  // layer): sequences beyond it are left out (said on stderr). 8 GiB.
  int64_t max_capture_bytes = int64_t{8} << 30;
};

struct DistillReport {
  // Per layer, relative error sum |out - y|^2 / sum |y|^2 over the training
  // sequences, before and after.
  std::vector<double> loss_before, loss_after;
  int64_t train_tokens = 0;       // tokens in the training sequences
  int64_t skipped_sequences = 0;  // left out by max_capture_bytes
  std::vector<int64_t> steps;     // per layer
  double seconds = 0;             // wall time, capture included
};

// True when `o` asks for any training.
inline bool DistillEnabled(const DistillOptions& o) {
  return o.tokens > 0 || o.minutes > 0;
}

// One layer's training (the loop above) on inputs xs and targets ys (per
// sequence [n, hidden] f32), for at most `layer_seconds` (with
// options.minutes) and options.tokens tokens; `layer` / `layers` label the
// progress bar. a's projections are replaced only when the training-set loss
// drops. Shared with sequential.h.
struct LayerTrainResult {
  double before = 0, after = 0;  // relative training-set loss
  int64_t steps = 0;
};
LayerTrainResult TrainLayer(const DistillShape& shape,
                            const std::vector<std::vector<float>>& xs,
                            const std::vector<std::vector<float>>& ys,
                            const DistillOptions& options, double layer_seconds,
                            int layer, int layers, std::mt19937_64* rng,
                            AttentionTensors* a);

// Relative loss sum |out - y|^2 / sum |y|^2 of `p` over sequences xs / ys
// ([n, hidden] each).
double RelativeLoss(const DistillShape& s, const LayerParams<float>& p,
                    const std::vector<std::vector<float>>& xs,
                    const std::vector<std::vector<float>>& ys, int64_t hidden);

// Documents concatenated in order and cut into sequences of seq_len tokens
// (the last one shorter; one of under 2 tokens dropped): the training
// sequences.
std::vector<std::vector<int32_t>> PackSequences(
    const std::vector<std::vector<int32_t>>& docs, int seq_len);

// The converted layer's shape from its maps (pointing into m.inv_freq).
DistillShape ShapeOf(const ModelConfig& c, const LatentLayerMaps& m);

// Trains (*tensors)[l] (from ApplyLayerMaps / the refit; shapes and RoPE
// from maps[l]) on `docs` through the source model `src` (f32, Llama
// architecture). Errors: InvalidArgument (no budget, no documents, sizes),
// those of Forward.
absl::StatusOr<DistillReport> DistillLayers(
    const ModelWeights& src, const std::vector<std::vector<int32_t>>& docs,
    const std::vector<LatentLayerMaps>& maps,
    std::vector<AttentionTensors>* tensors, const DistillOptions& options);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_DISTILL_H_
