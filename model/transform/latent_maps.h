// A KV-Latent conversion of one layer as linear maps of the source layer's
// head vectors, and the key maps of the partial-rotary method.
//
// Every calibrated init is linear in the source projections: a new query
// head is Q_h q_h (q_h the source head's pre-RoPE query), a new key head
// K_g k_g, a new value head V_g v_g, and the output projection reads the new
// values through O_h: W_o'[:, h] = W_o[:, h] O_h. So the new weights are
// W_q'(h) = Q_h W_q(h), W_k'(g) = K_g W_k(g), W_v'(g) = V_g W_v(g), and the
// maps alone say what the converted layer computes from the source layer's
// activations (the refit, refit.h, uses that).
//
// Partial-rotary keys (the method's default): of the source head's hs/2
// rotary pairs, `rope_dims / 2` keep RoPE (chosen by RotationPairScores) and
// become the new head's rotary channels [0, rope_dims) (pair i = kept pair
// i, rotate-half within them, its original frequency). Every other source
// channel loses RoPE and joins the position-free set P; the new head's
// channels [rope_dims, d_qk) are n = d_qk - rope_dims linear combinations of
// P, chosen per KV head by a whitened SVD so that q_P . k_P, the logit share
// of P, is kept as well as n dims can:
//   with Ck = E[k_P k_P^T], Cq = sum over the group's query heads of
//   E[q_P q_P^T], V_n = top-n eigenvectors of Ck^1/2 Cq Ck^1/2,
//   k' = V_n^T Ck^-1/2 k_P   and   q' = V_n^T Ck^1/2 q_P,
// so q'.k' = q_P^T Ck^1/2 V_n V_n^T Ck^-1/2 k_P: exact when n = |P|, and
// the rank-n truncation minimising E[(q_P.k_P - q'.k')^2] over independent
// q and k otherwise. The logit scale is folded into Q: the engine's
// 1/sqrt(d_qk) then equals the source's 1/sqrt(hs).
#ifndef LATENTKV_MODEL_TRANSFORM_LATENT_MAPS_H_
#define LATENTKV_MODEL_TRANSFORM_LATENT_MAPS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "model/transform/calibration.h"
#include "model/transform/model_writer.h"
#include "model/weights.h"

namespace latentkv::model::transform {

// One layer's maps (row-major); hs_qk / hs_vo are the source head widths.
struct LatentLayerMaps {
  int d_qk = 0, d_vo = 0, rope_dims = 0;  // rope_dims <= d_qk, even
  std::vector<float> inv_freq;            // [rope_dims / 2]
  std::vector<std::vector<double>> q;     // per query head [d_qk, hs_qk]
  // Per new KV head [d_qk, span * hs_qk] / [d_vo, span * hs_vo], span =
  // source KV heads / new KV heads (1, or all of them: joint_latent.h),
  // reading `span` consecutive source heads concatenated.
  std::vector<std::vector<double>> k;
  std::vector<std::vector<double>> v;
  std::vector<std::vector<double>> o;  // per query head [hs_vo, d_vo]
};

// Per rotary pair j of the source layer (pre-RoPE statistics `s`, the
// layer's table `inv_freq` [hs/2]): how much the logits would move if the
// pair lost RoPE, sum over query heads of E|q_j| E|k_j| * mean over
// distances D = 1..max_distance of sin^2(inv_freq[j] * D / 2) (a pair that
// barely rotates over the context loses little; MHA2MLA's 2-norm score
// without this factor prefers exactly those pairs).
std::vector<double> RotationPairScores(const LayerStats& s,
                                       const std::vector<float>& inv_freq,
                                       int max_distance);

// The `count` highest-scoring pair indices, ascending.
std::vector<int> TopPairs(const std::vector<double>& scores, int count);

// The channels of a source q/k head of width hs that lose RoPE when
// `kept` (ascending pair indices below hs/2) keep it: both channels of every
// other pair, ascending.
std::vector<int> PositionFreeChannels(const std::vector<int>& kept, int hs);

// The output metric of query heads first_head .. first_head + heads - 1 of
// `layer`: sum over them of W_o,h^T W_o,h [hs_vo, hs_vo] (W_o,h the head's
// columns of o_proj, f32): the squared output error of a value error e is
// e^T S e.
std::vector<double> OutputMetric(const ModelWeights& w, int layer,
                                 int first_head, int heads);

// Fills maps->q, ->k, ->inv_freq, ->d_qk, ->rope_dims of layer `layer`:
// rotary pairs `kept` (ascending source pair indices; rope_dims =
// 2 * kept.size()), and d_qk - rope_dims position-free dims from the other
// channels (whitened SVD above; needs s.k_moment / s.q_moment). Errors:
// InvalidArgument (pairs not distinct, ascending and below hs/2; more
// rotary dims than d_qk; more position-free dims than free channels),
// those of the eigendecompositions.
absl::Status BuildKeyMaps(const ModelWeights& w, int layer, const LayerStats& s,
                          const std::vector<int>& kept, int d_qk,
                          LatentLayerMaps* maps);

// Applies per-head maps to activations: out [T, heads, rows] = maps[h]
// [rows, hs] times in [T, in_heads, hs] (head h reads in-head h * in_heads /
// heads; heads = maps.size()). Maps may have more than `rows` rows: the
// first `rows` are used.
std::vector<double> MapHeads(const double* in, int64_t n, int in_heads, int hs,
                             const std::vector<std::vector<double>>& maps,
                             int rows);

// The layer's new attention tensors from its maps.
AttentionTensors ApplyLayerMaps(const ModelWeights& w, int layer,
                                const LatentLayerMaps& maps);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_LATENT_MAPS_H_
