// How much a KV latent shared across KV heads, or between K and V (the
// MLA-style variant), would save over KV-Latent's per-head latents: a
// calibration study that decides whether the engine change an MLA cache
// needs (one latent read as both K and V) would pay.
//
// Every latent here is a weighted PCA, so the three variants compare on one
// objective. Per layer, with the kept rotary pairs fixed (rotary dims R per
// head), P the position-free channels of each KV head (m = hs - R), and the
// pre-RoPE key and value vectors of all KV heads:
//   key part:   f_k = k_P of every KV head (K*m); the logit error of a
//               rank-n key map is E[(q.k - q'.k')^2] = E|Cq^1/2 (k - k^)|^2
//               (the whitened SVD of latent_maps.h is this weighted PCA), Cq
//               block-diagonal: each block the sum over the KV head's query
//               heads of E[q_P q_P^T];
//   value part: f_v = v of every KV head (K*hv), weight S block-diagonal,
//               S_g = sum over g's query heads of W_o,h^T W_o,h (the
//               output-weighted V basis of kv_latent.h).
// A variant's residual at D latent dims is the sum of the eigenvalues its
// weighted covariance drops, alpha * (key residual) + (value residual),
// alpha converting squared logit error into squared output error:
//   per head: per KV head, n key + v value dims (n + v = D / K; the best
//             split, the same in every head): today's engine;
//   joint:    one key latent and one value latent across all KV heads (any
//             split r_k + r_v = D): what an engine with one KV head could
//             hold without caching anything twice;
//   shared:   one latent of [alpha^1/2 f_k; f_v] (MLA: read as K and as V).
// For every alpha: shared <= joint <= per head (each is the previous one
// with a constraint removed). The study reports, per layer and alpha, the
// residuals at the uniform budget D = K * (d_qk - R + d_vo) and the dims
// each variant needs to match the per-head residual (bytes = K*R + dims).
//
// alpha is swept as multiples of alpha0 = tr(S Cv) / tr(Cq Ck) (both parts
// of equal weighted energy), since no single conversion factor is right for
// every attention pattern; a gain that is small for every alpha is small.
#ifndef LATENTKV_MODEL_TRANSFORM_LATENT_SHARING_H_
#define LATENTKV_MODEL_TRANSFORM_LATENT_SHARING_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/transform/calibration.h"
#include "model/weights.h"

namespace latentkv::model::transform {

struct SharingVariant {
  double residual = 0;    // weighted residual at the uniform budget
  int dims_to_match = 0;  // latent dims to reach the per-head residual
};

struct SharingLayerResult {
  int layer = 0;
  double alpha = 0;     // the key weight used
  int budget_dims = 0;  // D = K * (d_qk - R + d_vo)
  int rotary_dims = 0;  // K * R (cached beside any latent)
  double total = 0;     // alpha tr(Cq Ck) + tr(S Cv): the residual at 0
  SharingVariant per_head, joint, shared;
};

struct SharingOptions {
  int d_qk = 0, d_vo = 0;  // the uniform per-head budget
  // alpha = alpha0 * each entry.
  std::vector<double> alpha_scales = {0.01, 0.1, 1, 10, 100};
};

// `kept[l]` the layer's rotary pairs (ascending, R / 2 of them), `stats`
// from Calibrate with kv_joint_moment (q_moment and kv_moment used). One
// result per layer and alpha scale, layer-major. Errors: InvalidArgument
// (dims, sizes, no joint moment), those of the eigensolver.
absl::StatusOr<std::vector<SharingLayerResult>> StudyLatentSharing(
    const ModelWeights& w, const std::vector<LayerStats>& stats,
    const std::vector<std::vector<int>>& kept, const SharingOptions& options);

// The eigenvalues (descending, negatives clamped to 0) of r c r for
// symmetric [n, n] r (a weight's square root) and c (a covariance): the
// weighted PCA's spectrum. Errors: those of the eigensolver.
absl::StatusOr<std::vector<double>> WeightedSpectrum(
    const std::vector<double>& r, const std::vector<double>& c, int n);

// tail[i] = sum of values[i..] (tail[size] = 0): the residual of keeping
// the first i components.
std::vector<double> Tails(const std::vector<double>& values);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_LATENT_SHARING_H_
