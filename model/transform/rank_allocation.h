// Per-layer rank allocation for the calibrated KV-Latent conversion: how many
// position-free key dims and value dims each layer keeps when the KV bytes of
// the whole model are fixed (a uniform conversion's), so that layers whose
// attention needs more get more.
//
// Error curves. The calibrated maps are nested: the whitened SVD of the keys
// and the metric PCA of the values (latent_maps.h, kv_latent.h) order their
// components by eigenvalue, so a rank-n map is the first n rows of the
// full-rank one (and the engine's 1/sqrt(d_qk) is folded into Q). For every
// layer, on the calibration activations of the SOURCE model (its hidden
// states feed every layer, as in the refit), and for each candidate set of
// rotary pairs c (rope_c rotary dims):
//   key[c][i] = sum_t |W_o (z_t - z~_t)|^2 with the rope_c rotary dims plus
//               2i position-free key dims and exact values, z~ the source
//               layer's attention output before W_o;
//   value[i]  = the same with exact keys and i value dims (i = 0..hv).
// value[hv] is zero; key[c].back() is what losing RoPE on the other
// channels costs. Errors of K and V are taken as additive.
//
// Allocation. Minimise sum_l weight_l (key_l[c_l][n_l / 2] + value_l[v_l])
// over candidates c_l, even n_l in [0, hs_l - rope_c] and even v_l in [2,
// hv_l] with rope_c + n_l >= 2, subject to sum_l (rope_c + n_l + v_l) <=
// budget: an exact dynamic programme over layers and budget units of 2 dims
// (a layer's error need not be convex in its ranks, which would mislead a
// greedy split).
//
// Thread-safety: pure functions (BLAS may use its own threads).
#ifndef LATENTKV_MODEL_TRANSFORM_RANK_ALLOCATION_H_
#define LATENTKV_MODEL_TRANSFORM_RANK_ALLOCATION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/transform/latent_maps.h"
#include "model/weights.h"

namespace latentkv::model::transform {

// How a layer's error counts in the sum.
enum class AllocationWeight {
  // Divided by the energy of the residual stream entering the layer: an
  // error counts by how much it perturbs the hidden state it is added to
  // (the norms of later layers read it relative to that).
  kResidual,
  // Divided by the energy of the layer's own attention output (the relative
  // error local distillation reports).
  kRelative,
  // As measured: every layer's squared error counts alike.
  kAbsolute,
};

// "residual" | "relative" | "absolute".
absl::StatusOr<AllocationWeight> ParseAllocationWeight(absl::string_view text);

struct LayerErrorCurves {
  std::vector<int> rope_dims;            // per candidate
  std::vector<std::vector<double>> key;  // [c][(hs - rope_c) / 2 + 1]
  std::vector<double> value;             // [hv + 1]
  double residual_energy = 0;  // sum_t |h_t|^2, h the stream entering it
  double output_energy = 0;    // sum_t |W_o z~_t|^2
  int64_t tokens = 0;          // calibration tokens observed
};

struct LayerRanks {
  int d_qk = 0;  // rotary + position-free dims
  int d_vo = 0;
  int candidate = 0;  // the rotary-pair candidate chosen (AllocateRanks)
};

// The curves of every layer: candidates[c][l] is layer l's full-rank maps
// (CalibratedMaps at d_qk = hs, d_vo = hv; or cross-head, BuildJointLayerMaps
// at K * hs, K * hv: the curves then run over the joint dims) with candidate
// c's rotary pairs (the value maps of candidate 0 are used; every candidate
// of a layer has the same KV heads), over the leading documents of
// `docs` up to `max_tokens` tokens (at least one document). Errors:
// InvalidArgument (no candidates, maps not full rank, no documents), those
// of the forward.
absl::StatusOr<std::vector<LayerErrorCurves>> MeasureErrorCurves(
    const ModelWeights& w, absl::Span<const std::vector<int32_t>> docs,
    const std::vector<std::vector<LatentLayerMaps>>& candidates,
    int64_t max_tokens);

// The per-layer candidate and ranks minimising the weighted error sum under
// `budget_dims` = sum over layers of d_qk + d_vo. Errors: InvalidArgument
// when the budget is odd or below every layer's minimum (2 value dims, and
// at least 2 key dims).
absl::StatusOr<std::vector<LayerRanks>> AllocateRanks(
    const std::vector<LayerErrorCurves>& curves, int64_t budget_dims,
    AllocationWeight weight);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_RANK_ALLOCATION_H_
