// Sequential (error-carrying) refit and distillation of converted attention
// layers.
//
// The local steps (refit.h, distill.h) fit each converted layer on the
// SOURCE model's hidden states, so no layer ever sees the errors of the
// layers before it. Here the layers are fitted in order on the CONVERTED
// model's own hidden states: layer l's input is RMSNorm(h'_l), where h'_l is
// the residual stream after layers 0..l-1 as already converted, refitted
// and trained (their attention replaced, their MLPs the source's); its target
// is the source layer's attention output on the source's hidden states,
//   target_l = y_l + drift * (h_l - h'_l),
// so with drift > 0 the layer also learns to pull the stream back towards
// the source's (drift 1 asks its output to cancel the whole difference in
// the residual stream after it).
//
// Per layer, in order: the W_o ridge refit (refit.h's problem on these
// inputs and targets), then the distillation (distill.h's TrainLayer) when a
// budget is set, then the stream moves past the layer. Cost: one source
// forward (double) over the sequences, plus one f32 pass of each converted
// layer and MLP. Memory: the targets of every layer, tokens * hidden * 4
// bytes per layer, plus the stream (tokens * hidden * 8 bytes).
#ifndef LATENTKV_MODEL_TRANSFORM_SEQUENTIAL_H_
#define LATENTKV_MODEL_TRANSFORM_SEQUENTIAL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/transform/distill.h"
#include "model/transform/latent_maps.h"
#include "model/transform/model_writer.h"
#include "model/weights.h"

namespace latentkv::model::transform {

// What each layer is fitted to.
enum class SequentialTarget {
  // The source layer's output on the source's hidden states (plus the drift
  // term): the layer also corrects what the layers before it changed.
  kSource,
  // The source layer's output on the converted stream's own inputs
  // (GPTQ's "true sequential"): the layer keeps the source layer's function
  // on the inputs it will see; no source pass is needed (drift unused).
  kSourceOnStream,
};

struct SequentialOptions {
  SequentialTarget target = SequentialTarget::kSource;
  bool refit = true;       // the W_o ridge refit of every layer
  double ridge = 1e-3;     // its relative ridge weight (refit.h); > 0
  double drift = 0.0;      // weight of h_l - h'_l in the target; >= 0
  DistillOptions distill;  // trains each layer when DistillEnabled
  // Bound on the kept targets (4 bytes per token, hidden unit and layer):
  // sequences beyond it are left out (said on stderr). 8 GiB.
  int64_t max_capture_bytes = int64_t{8} << 30;
};

struct SequentialReport {
  // Per layer, the relative error sum |out - target|^2 / sum |target|^2 of
  // the converted layer on the stream's inputs: as built (maps only), after
  // the refit, after the distillation.
  std::vector<double> loss_init, loss_refit, loss_after;
  int64_t tokens = 0;             // tokens in the sequences used
  int64_t skipped_sequences = 0;  // left out by max_capture_bytes
  double seconds = 0;             // wall time, the source pass included
};

// Refits and trains (*tensors)[l] (from ApplyLayerMaps of `maps`, one per
// layer) in layer order over `seqs` (each a token sequence no longer than
// the model's context; used as given), through the source model `src` (f32,
// Llama architecture). Errors: InvalidArgument (sizes, no sequences, bad
// options), those of Forward and of the solve.
absl::StatusOr<SequentialReport> SequentialFit(
    const ModelWeights& src, const std::vector<std::vector<int32_t>>& seqs,
    const std::vector<LatentLayerMaps>& maps,
    std::vector<AttentionTensors>* tensors, const SequentialOptions& options);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_SEQUENTIAL_H_
