// Cross-head KV-Latent: every layer's K and V become ONE latent KV head read
// by all query heads, instead of one latent per source KV head. Same KV
// bytes as the per-head conversion, but the latent dims go where the
// calibration says across heads (and capture what heads share): on SmolLM2
// at half the bytes the study of latent_sharing.h finds the per-head
// residual matched with ~78% of the bytes. Needs no engine change: the
// converted model is a GQA model with num_kv_heads = 1.
//
// Layer maps (latent_maps.h conventions; K source KV heads, hs / hv their
// widths, R the rotary dims kept per source head, P the other channels):
// - rotary channels: the new KV head's first K * R channels are the kept
//   pairs of every source head, rotate-half within them: source head g's
//   pair i (i < R/2) is new pair g * R/2 + i (channels g*R/2 + i and
//   K*R/2 + g*R/2 + i), with its original frequency; a query head fills
//   only its own KV head's pairs;
// - position-free channels [K*R, d_qk): r_k = d_qk - K*R dims from the
//   joint position-free key of all heads by the whitened SVD of
//   latent_maps.h over the joint moments (Ck = E[k_P k_P^T] across heads,
//   Cq block-diagonal);
// - values: r_v = d_vo dims, the top eigenvectors of S^1/2 Cv S^1/2 over
//   all heads' values, S block-diagonal (kv_latent.h's output-weighted
//   basis, across heads).
// LatentLayerMaps then holds one k map [d_qk, K*hs] and one v map [d_vo,
// K*hv] reading the source KV heads concatenated; q maps [d_qk, hs] and o
// maps [hs_vo, d_vo] per query head as before.
#ifndef LATENTKV_MODEL_TRANSFORM_JOINT_LATENT_H_
#define LATENTKV_MODEL_TRANSFORM_JOINT_LATENT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/transform/calibration.h"
#include "model/transform/latent_maps.h"
#include "model/weights.h"

namespace latentkv::model::transform {

// Layer `layer`'s cross-head maps: `kept` its rotary pairs (ascending, R/2),
// `stats` its LayerStats (q_moment, and kv_moment: Calibrate with
// kv_joint_moment). `heads_per_latent` G (0: all K): the layer gets K / G
// latent KV heads, latent j over source KV heads [j G, (j + 1) G), each
// built as above over its G heads (so a model with K / G KV heads splits
// over tensor-parallel ranks that divide K / G); d_qk = G*R +
// position-free dims (even), d_vo value dims, per latent head. Errors:
// InvalidArgument (G not dividing K, dims beyond what the source holds),
// the eigensolver's.
absl::StatusOr<LatentLayerMaps> BuildJointLayerMaps(
    const ModelWeights& w, int layer, const LayerStats& stats,
    const std::vector<int>& kept, int d_qk, int d_vo, int heads_per_latent = 0);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_JOINT_LATENT_H_
