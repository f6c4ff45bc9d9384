// KV-Latent conversion (Shi et al., ACL 2025, arXiv 2507.11273): shrink every
// layer's query/key head dim to d_qk and value/output head dim to d_vo, so
// the KV cache holds n_kv * (d_qk + d_vo) values per token and layer.
//
// Source head widths are the source layer's own (hs_qk = its d_qk, hs_vo =
// its d_vo; hidden/heads for a plain Llama). Q/K rows are HF rotate-half:
// within a head, channel j < hs_qk/2 pairs with j + hs_qk/2.
//
// Strided init (the paper's): r = hs/d per matrix; per head keep rows
// W_q[::r], W_k[::r] (so pair (j, j + hs/2) survives for j % r == 0), rows
// W_v[::r_vo] and columns W_o[:, ::r_vo]. The config switches to the
// frequency-aware RoPE table (d_qk % 4 == 0 required); no rotary_inv_freq
// tensor. The paper trains after this init; untrained it is only a baseline.
//
// Calibrated init (ours, training-free), from calibration statistics:
//   V/O: per KV head, a rank-d_vo map of the value space absorbed into W_o.
//     kPca (the plain method): U [hs_vo, d_vo] = top-d_vo eigenvectors of
//     C = E[v v^T]; W_v' = U^T W_v(head); for every query head h reading it,
//     W_o'[:, h] = W_o[:, h] U.
//     kOutputWeighted (default): the error that matters is W_o,h (v - v^),
//     so measure it in the metric S = sum_h W_o,h^T W_o,h of the query heads
//     reading the KV head: V = top-d_vo eigenvectors of S^1/2 C S^1/2,
//     W_v' = V^T S^1/2 W_v(head), W_o'[:, h] = W_o[:, h] S^-1/2 V (S's
//     eigenvalues floored at 1e-12 of the largest). On stories260K held-out
//     text: ppl 10.7 vs 12.1 (kPca) at d_qk = 8, d_vo = 4.
//     Both are exact when d_vo = hs_vo.
//   Q/K: the engine's RoPE table is per layer, so one set of d_qk/2 rotary
//     pairs is kept per layer (PairCriterion says how it is chosen). New pair
//     i = old pair kept[i] (kept ascending) in every q and k head, with its
//     original inverse frequency, written as
//     model.layers.N.self_attn.rotary_inv_freq. W_q is scaled by
//     sqrt(d_qk/hs_qk) so the engine's 1/sqrt(d_qk) equals the original
//     1/sqrt(hs_qk) on the kept pairs. With d_qk = hs_qk and d_vo = hs_vo
//     the model's function is unchanged.
#ifndef LATENTKV_MODEL_TRANSFORM_KV_LATENT_H_
#define LATENTKV_MODEL_TRANSFORM_KV_LATENT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/dtype.h"
#include "model/transform/calibration.h"
#include "model/transform/distill.h"
#include "model/transform/joint_latent.h"
#include "model/transform/latent_maps.h"
#include "model/transform/model_writer.h"
#include "model/transform/pair_search.h"
#include "model/transform/rank_allocation.h"
#include "model/transform/sequential.h"
#include "model/weights.h"

namespace latentkv::model::transform {

enum class KvLatentInit { kStrided, kCalibrated };

// How a layer's kept rotary pairs are chosen.
enum class PairCriterion {
  // kRotation when the converted keys are partially rotary (rope < d_qk),
  // else kOutputSearch.
  kAuto,
  // The rotation-aware score (latent_maps.h RotationPairScores): the pairs
  // whose RoPE matters most over the context keep it.
  kRotation,
  // Search over kept sets for the least attention-output error
  // (pair_search.h). Best on stories260K by far: held-out ppl 32.7 at
  // d_qk = 4, d_vo = 8, vs 59-89 for the per-pair scores below.
  kOutputSearch,
  // The d_qk/2 pairs with the largest per-pair score summed over query
  // heads (see LayerStats): pair_logit_var (second-order attention KL)...
  kLogitVariance,
  kAttentionMagnitude,  // ... pair_attn_mag (attention-weighted E[|q||k|])
  kMagnitude,           // ... E|q_j| * E|k_j| (no attention weighting)
};

enum class ValueBasis { kOutputWeighted, kPca };

struct KvLatentOptions {
  int d_qk = 0;  // new query/key head dim (every layer); even, <= source
  int d_vo = 0;  // new value/output head dim (every layer); <= source
  KvLatentInit init = KvLatentInit::kCalibrated;  // default: calibrated
  // Rotary dims of every converted layer (even, <= d_qk); the other d_qk -
  // rope dims are position-free, compressed from the channels that lose
  // RoPE (latent_maps.h). rope_dims = d_qk: the pair-keeping init (no
  // position-free dims). -1 (default): DefaultRopeDims(d_qk).
  int rope_dims = -1;
  PairCriterion pair_criterion = PairCriterion::kAuto;
  // kRotation's distance scale (tokens). Default 512.
  int rotation_distance = 512;
  // Refit W_o by ridge least squares on the calibration activations
  // (refit.h). Default on.
  bool refit_output = true;
  double refit_ridge = 1e-3;
  // Per-layer ranks (rank_allocation.h): d_qk and d_vo become per-layer
  // shares of the uniform budget's total KV bytes (sum of d_qk + d_vo), the
  // split minimising the calibrated error curves weighted by
  // `allocation_weight`, measured on the first `allocation_tokens`
  // calibration tokens. Every layer keeps `rope_dims` rotary dims when it
  // is set (cross-head latents: always, K * rope_dims); else each per-head
  // layer also picks its rotary dims among d_qk/2, the default 3/4 and d_qk
  // (RopeCandidates), pairs by the rotation score. Per-head latents only
  // (allocate_joint for cross-head ones). Default on, kRelative: on SmolLM2
  // at half the bytes ppl 21.76 vs 22.67 uniform (kResidual 50.0,
  // kAbsolute 32.5; docs/QUALITY.md). Costs ~4 min of SmolLM2's conversion.
  bool allocate_ranks = true;
  // The same for cross-head latents: the layers share out G times the
  // per-head dims (joint_latent.h's ranks), weighted by allocation_weight.
  // Default off: at half the bytes it helps stories260K (6.70x -> 6.43x)
  // but not SmolLM2 (1.374x -> 1.407x; docs/QUALITY.md).
  bool allocate_joint = false;
  // Cross-head latents (joint_latent.h): every layer's K and V become one
  // latent KV head of K * d_qk / K * d_vo dims (K the source's KV heads;
  // the same bytes), the converted model has num_kv_heads = 1; with
  // allocate_joint the layers' joint dims are allocated. Default on: on
  // SmolLM2 at half the bytes, training-free ppl 15.58 (1.37x the full
  // model's) against 21.76 with per-head latents and rank allocation
  // (docs/QUALITY.md). A model with one KV head cannot be split by tensor
  // parallelism (KV heads are sharded): off for TP > 1.
  bool joint_heads = true;
  // Source KV heads per cross-head latent (joint_heads only): 0 (default)
  // all, one latent KV head per layer; G dividing K: K / G latent heads of
  // G * d_qk / G * d_vo dims, which tensor parallelism can split when the
  // TP size divides K / G.
  int joint_group = 0;
  AllocationWeight allocation_weight = AllocationWeight::kRelative;
  int64_t allocation_tokens = 8192;
  // Local distillation after the init (distill.h); off unless a budget is
  // set. Its text: distill_text.path, else the calibration file, whose
  // first distill_text.max_lines non-empty lines are read (default 1000).
  DistillOptions distill;
  CalibrationTextOptions distill_text = {"", 1000, 0};
  // Refit and distil in layer order on the converted model's own hidden
  // states (sequential.h) instead of each layer on the source's (refit.h,
  // distill.h); its sequences: the distillation's when a budget is set,
  // else the calibration documents. `drift`: sequential.h's weight of the
  // stream's difference in the targets.
  bool sequential = false;
  SequentialTarget sequential_target = SequentialTarget::kSource;
  double drift = 0.0;
  PairSearchOptions search;  // for kOutputSearch
  ValueBasis value_basis = ValueBasis::kOutputWeighted;
  // Calibration text (calibrated init only; path required there). Defaults:
  // the first 200 non-empty lines.
  CalibrationTextOptions calibration;
  DType dtype = DType::kF32;  // stored dtype of the output matrices
};

// 3/4 of d_qk rounded down to even: the best split measured on SmolLM2 at
// half the bytes (docs/QUALITY.md, "KV-Latent on SmolLM2").
inline int DefaultRopeDims(int d_qk) { return 3 * d_qk / 4 / 2 * 2; }

// "auto" | "rotation" | "search" | "logit-variance" | "attention" |
// "magnitude".
absl::StatusOr<PairCriterion> ParsePairCriterion(absl::string_view text);
// "strided" | "calibrated".
absl::StatusOr<KvLatentInit> ParseKvLatentInit(absl::string_view text);
// Parses "d_qk=A,d_vo=B[,rope=R]" into options->d_qk / d_vo (both required)
// and options->rope_dims.
absl::Status ParseKvLatentDims(absl::string_view text,
                               KvLatentOptions* options);

// The strided attention tensors of every layer (no rotary_inv_freq).
// Errors: InvalidArgument naming the layer and the constraint broken.
absl::StatusOr<std::vector<AttentionTensors>> StridedAttention(
    const ModelWeights& weights, int d_qk, int d_vo);

// The d_qk/2 kept pair indices (ascending) of one layer under `criterion`.
// stats.pair_* must be filled for the attention criteria.
std::vector<int> SelectRotaryPairs(const LayerStats& stats, int d_qk,
                                   PairCriterion criterion);

// The calibrated maps of every layer (latent_maps.h): `kept[l]` the layer's
// rotary pairs (ascending, at most d_qk/2), the other d_qk - 2|kept| dims
// position-free; V/O by `basis`. `stats` from Calibrate (kv_group_size 1).
absl::StatusOr<std::vector<LatentLayerMaps>> CalibratedMaps(
    const ModelWeights& weights, const std::vector<LayerStats>& stats,
    const std::vector<std::vector<int>>& kept, int d_qk, int d_vo,
    ValueBasis basis);
// The same with each layer's own dims (`dims` one per layer).
absl::StatusOr<std::vector<LatentLayerMaps>> CalibratedMaps(
    const ModelWeights& weights, const std::vector<LayerStats>& stats,
    const std::vector<std::vector<int>>& kept,
    const std::vector<LayerRanks>& dims, ValueBasis basis);

// The calibrated attention tensors of every layer with every kept channel
// rotary (the pair-keeping init): `kept[l]` the layer's kept pairs
// (ascending; all layers the same count d_qk/2), `stats` from Calibrate with
// kv_group_size 1. Errors: InvalidArgument (dims, stats).
absl::StatusOr<std::vector<AttentionTensors>> CalibratedAttention(
    const ModelWeights& weights, const std::vector<LayerStats>& stats,
    const std::vector<std::vector<int>>& kept, int d_vo, ValueBasis basis);

// Loads `model_dir` (a model directory or a GGUF model, f32:
// LoadSourceModel), converts, writes `out_dir` (a normal model directory:
// config.json with per-layer qk_head_dim / vo_head_dim, model.safetensors,
// the tokenizer copied or, from a GGUF, written from its metadata). A model
// whose q/k norms act on the whole head (Gemma 3) gets its key/query maps
// after the norms (qk_norm_dim; calibrated init and the W_o refit only).
// Errors: NotFound (model or text missing), InvalidArgument (dims, missing
// calibration text), Unimplemented (a fit the model's layer does not
// support).
absl::Status ConvertKvLatent(const std::string& model_dir,
                             const std::string& out_dir,
                             const KvLatentOptions& options);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_KV_LATENT_H_
