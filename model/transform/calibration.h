// Calibration capture: runs a model over text with the reference forward
// (forward.h) and accumulates, per layer, the activation statistics the
// conversions need (never the activations themselves).
//
// Notation for one layer: T tokens, heads H, KV heads K, query heads per KV
// head H/K, key/query head width d = d_qk, d/2 rotary pairs; pair j of a
// (pre-RoPE) q or k head vector x is (x[j], x[j + d/2]) (HF rotate-half), its
// magnitude sqrt(x[j]^2 + x[j+d/2]^2), and as a complex number
// z = x[j] + i x[j + d/2]. A "group" is G consecutive KV heads (G =
// kv_group_size; 1 for per-head statistics). Every expectation E[.] is a mean
// over all calibration tokens (query tokens for the attention scores).
#ifndef LATENTKV_MODEL_TRANSFORM_CALIBRATION_H_
#define LATENTKV_MODEL_TRANSFORM_CALIBRATION_H_

#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/weights.h"

namespace latentkv::model::transform {

struct CalibrationTextOptions {
  std::string path;     // text file; one document per non-empty line
  int max_lines = 200;  // non-empty lines used (0: all), from the start
  int skip_lines = 0;   // non-empty lines skipped first (held-out text)
};

// Reads the documents of `options.path` and encodes each with the tokenizer
// of `model_dir` (tokenizer.model or tokenizer.bin, `config.vocab_size`
// tokens), BOS first, cut at config.max_position_embeddings tokens.
// Errors: NotFound (text or tokenizer missing), InvalidArgument (no lines).
absl::StatusOr<std::vector<std::vector<int32_t>>> LoadCalibrationDocs(
    const std::string& model_dir, const ModelConfig& config,
    const CalibrationTextOptions& options);

struct CalibrationOptions {
  // G: consecutive KV heads whose joint statistics (concatenated V moment,
  // complex key-pair moment) are accumulated. Must divide num_kv_heads.
  // Default 1 (per KV head, what KV-Latent needs).
  int kv_group_size = 1;
  // Accumulate the attention-weighted pair scores (pair_logit_var,
  // pair_attn_mag); costs H * T^2 * d/2 per layer. Default on.
  bool attention_scores = true;
  // Accumulate LayerStats::kv_moment (the joint key/value moment of all KV
  // heads, for cross-head latents). Default off.
  bool kv_joint_moment = false;
};

// Means over the calibration tokens of one layer. Shapes use the notation
// above; matrices are row-major.
struct LayerStats {
  int d_qk = 0, d_vo = 0, num_heads = 0, num_kv_heads = 0, group_size = 1;
  int64_t tokens = 0;
  // [K/G][G*d_vo, G*d_vo]: E[v_g v_g^T], v_g = concat of the group's V heads.
  // Diagonal block i is E[v v^T] of KV head g*G + i.
  std::vector<std::vector<double>> v_moment;
  // [K/G][d/2][G, G]: E[z z^H] with z_i the pre-RoPE complex pair j of the
  // group's KV head i (Hermitian, positive semi-definite).
  std::vector<std::vector<std::complex<double>>> k_pair_moment;
  // [K][d, d]: E[k k^T] of each KV head (pre-RoPE), and the sum over the
  // query heads reading it of E[q q^T] (pre-RoPE): the whitening of the
  // position-free key compression (latent_maps.h).
  std::vector<std::vector<double>> k_moment;
  std::vector<std::vector<double>> q_moment;
  // [K*(d + d_vo)]^2: E[f f^T], f = [k of every KV head; v of every KV
  // head] (pre-RoPE), when CalibrationOptions::kv_joint_moment; else empty.
  std::vector<double> kv_moment;
  std::vector<double> q_pair_abs;  // [H, d/2]: E|q pair j| (pre-RoPE)
  std::vector<double> k_pair_abs;  // [K, d/2]: E|k pair j| (pre-RoPE)
  // [H, d/2]: E_t[sum_s p(t,s) |q_t pair j| |k_s pair j|] with p the head's
  // attention probabilities (attention-weighted E[|q_pair| * |k_pair|]).
  std::vector<double> pair_attn_mag;
  // [H, d/2]: E_t[Var_{s ~ p(t, .)} c_j(t, s)] where c_j(t, s) is pair j's
  // share of the attention logit (roped q_t . roped k_s over the pair's two
  // channels, times 1/sqrt(d)). Dropping pair j shifts the logits of query
  // t by -c_j(t, .), which to second order changes its attention
  // distribution by KL = Var/2: the expected damage of dropping the pair.
  std::vector<double> pair_logit_var;
};

// Runs every document (1 <= length <= context) through the model and returns
// one LayerStats per layer. Errors: InvalidArgument (bad group size, empty
// docs, bad tokens), those of Forward.
absl::StatusOr<std::vector<LayerStats>> Calibrate(
    const ModelWeights& weights, const std::vector<std::vector<int32_t>>& docs,
    const CalibrationOptions& options = {});

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_CALIBRATION_H_
