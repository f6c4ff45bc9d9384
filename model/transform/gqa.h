// MHA -> GQA head compression (Yu et al., arXiv 2406.07056), training-free
// and RoPE-exact: groups of G = K/N consecutive KV heads (K = source
// num_kv_heads, N = target) become one shared KV head each; the output is a
// standard GQA model (num_key_value_heads = N, head dims unchanged).
//
// Values (per group, hs = d_vo): v_g = concat(v_0 .. v_{G-1}) [G*hs]. With U
// [G*hs, hs] the top-hs eigenvectors of E[v_g v_g^T], the shared value is
// v' = U^T v_g (W_v' = U^T W_v(group) [hs, hidden]) and v_i ~ U_i v', U_i
// [hs, hs] the rows of head i. Attention is linear in V, so a query head h
// that read old head i gets W_o'[:, h] = W_o[:, h] U_i.
//
// Keys (d = d_qk): per rotary pair j, z_i = k_i[j] + i k_i[j + d/2] (complex,
// pre-RoPE). RoPE multiplies every z_i at position p by the same e^{i p f_j},
// so any complex-linear mixing across the group commutes with it. With w
// [G] the unit top eigenvector of E[z z^H] (G x G Hermitian), the shared pair
// is c = sum_i conj(w_i) z_i and z_i ~ w_i c (the best rank-1 fit). The pair's
// logit term for query pair q_z is Re(q_z conj(z_i)) ~ Re(q_z conj(w_i)
// conj(c)) = Re(q' conj(c)) with q' = conj(w_i) q_z, identically after
// rotating q and c by the same angles. In real rows, with w_i = a + i b:
//   new k row j     = sum_i (a_i Wk_i[j]     + b_i Wk_i[j + d/2])
//   new k row j+d/2 = sum_i (a_i Wk_i[j+d/2] - b_i Wk_i[j])
//   new q row j     = a Wq_h[j] + b Wq_h[j + d/2]
//   new q row j+d/2 = a Wq_h[j + d/2] - b Wq_h[j]        (w_i of h's old head)
// With N = K (G = 1) w is a unit phase and U orthogonal: the function is
// unchanged.
#ifndef LATENTKV_MODEL_TRANSFORM_GQA_H_
#define LATENTKV_MODEL_TRANSFORM_GQA_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "model/transform/calibration.h"
#include "model/transform/model_writer.h"
#include "model/weights.h"

namespace latentkv::model::transform {

struct GqaOptions {
  int num_kv_heads = 0;  // N; must divide the source num_kv_heads
  // Calibration text (path required). Default: first 200 non-empty lines.
  CalibrationTextOptions calibration;
  DType dtype = DType::kF32;  // stored dtype of the output matrices
};

// The GQA attention tensors of every layer for N = `num_kv_heads`; `stats`
// from Calibrate with kv_group_size = source num_kv_heads / N. A layer whose
// RoPE table differs from the config's default keeps it as rotary_inv_freq.
absl::StatusOr<std::vector<AttentionTensors>> GqaAttention(
    const ModelWeights& weights, const std::vector<LayerStats>& stats,
    int num_kv_heads);

// Loads `model_dir` (a directory or a GGUF model, f32: LoadSourceModel),
// calibrates, converts, writes `out_dir`. Errors:
// NotFound (model or text missing), InvalidArgument (N not dividing, missing
// calibration text).
absl::Status ConvertGqa(const std::string& model_dir,
                        const std::string& out_dir, const GqaOptions& options);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_GQA_H_
