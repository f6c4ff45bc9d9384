// Least-squares refit of the converted layers' output projections on
// calibration activations (what KV-Latent does not cache is free to change).
//
// For every layer and calibration token t, with the SOURCE model's
// activations (its hidden states feed every layer, as in local
// distillation):
//   y_t  = W_o z_t, z_t = concat over query heads of sum_s p(t,s) v_s, the
//          source layer's attention output (its target);
//   z'_t = the same concat computed by the converted layer from its maps
//          (latent_maps.h): q' = Q_h q, k' = K_g k, partial RoPE with the new
//          table, softmax(q'.k' / sqrt(d_qk)), values V_g v.
// The new W_o' [hidden, H * d_vo] minimises
//   sum_t |y_t - W_o' z'_t|^2 + lambda |W_o' - W_o,init|^2,
// W_o,init the analytic absorption (ApplyLayerMaps), lambda = ridge *
// trace(sum z' z'^T) / (H * d_vo): it corrects the K and V errors together
// (the keys' attention shift included), and leans on the analytic map where
// the calibration text says little.
#ifndef LATENTKV_MODEL_TRANSFORM_REFIT_H_
#define LATENTKV_MODEL_TRANSFORM_REFIT_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "model/transform/latent_maps.h"
#include "model/transform/model_writer.h"
#include "model/weights.h"

namespace latentkv::model::transform {

// Memory: per layer (H*d_vo)^2 + hidden*H*d_vo doubles, all layers at once
// (SmolLM2 at d_vo 32: 40 MB; a 7B-class model at d_vo 64: ~3 GiB).
struct RefitOptions {
  double ridge = 1e-3;  // relative ridge weight (see above); > 0
};

// Replaces (*tensors)[l].o for every layer (tensors from ApplyLayerMaps of
// `maps`, one per layer) with the fit above over `docs` run through the
// source model `w` (f32). Errors: InvalidArgument (sizes), those of Forward
// and of the solve.
absl::Status RefitOutputProjections(
    const ModelWeights& w, const std::vector<std::vector<int32_t>>& docs,
    const std::vector<LatentLayerMaps>& maps,
    std::vector<AttentionTensors>* tensors, const RefitOptions& options = {});

// The ridge solve above for one layer from its accumulated moments: g =
// sum z' z'^T [dim, dim], r = sum y z'^T [hidden, dim] (row-major), dim = H
// * d_vo; *o [hidden, dim] holds W_o,init on entry and W_o' on return.
// Errors: InvalidArgument (sizes), those of the solve.
absl::Status SolveOutputRidge(const std::vector<double>& g,
                              const std::vector<double>& r, int dim,
                              int64_t hidden, double ridge,
                              std::vector<float>* o);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_REFIT_H_
