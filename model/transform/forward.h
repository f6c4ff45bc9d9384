// A dense, single-sequence, double-precision reference forward of a loaded
// model (the conversions' calibration pass and the tests' oracle).
//
// It follows the engine's semantics exactly: per layer RMSNorm, Q/K/V
// projections into the layer's d_qk / d_vo (with Gemma 3's q/k norms, the
// heads are normed first, at qk_proj_dim, then mapped to d_qk by the
// layer's q_latent / k_latent maps when the model has them), RoPE in HF
// rotate-half layout
// on the layer's first rope_dims channels (channel j pairs with j +
// rope_dims/2, angle position * rope_inv_freq[j]; the rest position-free)
// with the layer's own table, causal softmax attention with scale 1/sqrt(d_qk)
// (1/sqrt(query_pre_attn_scalar) when set; the layer's sliding window when it
// has one), GQA (query head h reads KV head h / (n_heads / n_kv_heads)),
// output projection, SwiGLU (or GeGLU) MLP, final RMSNorm, LM head; Gemma 3's
// embedding scale and post-attention / post-MLP norms where the config has
// them. Positions are 0..T-1.
//
// Weights must be f32 in memory (LoadModel's default). Arithmetic is double
// (OpenBLAS dgemm for the projections); each call converts one layer's
// matrices at a time, so memory stays O(T * width + T^2 * heads + largest
// matrix). Meant for small models and calibration, not serving.
#ifndef LATENTKV_MODEL_TRANSFORM_FORWARD_H_
#define LATENTKV_MODEL_TRANSFORM_FORWARD_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/weights.h"

namespace latentkv::model::transform {

// What one layer computed for a sequence of T tokens. Views valid only
// during LayerObserver::Observe.
struct LayerActivations {
  int layer = 0;
  int64_t tokens = 0;              // T
  const double* q = nullptr;       // [T, n_heads, d_qk], pre-RoPE
  const double* k = nullptr;       // [T, n_kv_heads, d_qk], pre-RoPE
  const double* v = nullptr;       // [T, n_kv_heads, d_vo]
  const double* q_rope = nullptr;  // [T, n_heads, d_qk], after RoPE
  const double* k_rope = nullptr;  // [T, n_kv_heads, d_qk], after RoPE
  // [n_heads, T, T]: probs[h, t, s] = attention of query t on key s (0 for
  // s > t). Null unless the observer asked for it.
  const double* probs = nullptr;
  const double* residual = nullptr;  // [T, hidden]: the stream entering it
  const double* input = nullptr;     // [T, hidden]: the normed attention input
  const double* output = nullptr;    // [T, hidden]: W_o z, before the residual
};

class LayerObserver {
 public:
  virtual ~LayerObserver() = default;
  // Whether Observe needs LayerActivations::probs (costs n_heads * T^2).
  virtual bool WantsProbs() const { return false; }
  virtual void Observe(const LayerActivations& a) = 0;
};

struct ForwardOptions {
  // Compute logits (the LM head); off for calibration. Default on.
  bool logits = true;
  // Called once per layer, in order; may be null. Not owned.
  LayerObserver* observer = nullptr;
};

// OK when `weights` can run here: f32 matrices in memory, Llama's
// architecture or Gemma 3's features; else Unimplemented (q/k/v biases, RoPE
// scaling) or InvalidArgument (other dtypes).
absl::Status CheckReferenceModel(const ModelWeights& weights);
// As CheckReferenceModel, and Unimplemented for any architecture feature
// (config.has_arch_features()): the transforms that assume Llama's layer
// (GQA merging, distillation, sequential fitting, rank allocation,
// cross-head latents).
absl::Status CheckLlamaModel(const ModelWeights& weights);

// Runs `tokens` (ids < vocab, 1 <= T <= max_position_embeddings) through the
// model. Returns logits [T, vocab] row-major (empty when options.logits is
// false). Errors: InvalidArgument for bad tokens / lengths or non-f32
// weights.
absl::StatusOr<std::vector<double>> Forward(const ModelWeights& weights,
                                            const std::vector<int32_t>& tokens,
                                            const ForwardOptions& options = {});

// RoPE on the first `rope` channels of each head of x [n, heads, d] at
// positions 0..n-1 (rotate-half within them; angles sign * t * inv[j] in
// double from the f32 table inv [rope / 2]), in place. sign -1 is the
// inverse rotation (its transpose: what a gradient passes back through).
// T is double (the reference) or float (distillation).
template <typename T>
void ReferenceRope(std::vector<T>* x, int64_t n, int heads, int d, int rope,
                   const float* inv, double sign = 1.0);

// The reference's pieces, T double (the reference) or float (distillation
// and sequential fitting, which run the converted model in f32):
// y [n, rows] = x [n, cols] * W^T for an f32 tensor W [rows, cols] (dgemm on
// a double copy of W, or sgemm);
template <typename T>
void ReferenceProject(const std::vector<T>& x, int64_t n, const Tensor& w,
                      std::vector<T>* y);
// y [n, dim] = RMSNorm(x) * w, the sum of squares in double;
template <typename T>
void ReferenceRmsNorm(const std::vector<T>& x, int64_t dim, const float* w,
                      double eps, std::vector<T>* y);
// h [n, dim] += SwiGLU (or GeGLU: `act`) MLP of layer `lw` on RMSNorm(h)
// (the gate in double), RMS-normed by lw.post_ffn_norm when it has one.
template <typename T>
void ReferenceAddMlp(const LayerWeights& lw, int64_t dim, double eps,
                     std::vector<T>* h, Activation act = Activation::kSilu);

// Runs each document through `weights` for `observer` alone (no logits).
// Errors: those of Forward.
absl::Status ObserveLayers(const ModelWeights& weights,
                           absl::Span<const std::vector<int32_t>> docs,
                           LayerObserver* observer);

// Causal softmax attention over roped q [n, heads, d] and k [n, kv_heads, d],
// values v [n, kv_heads, dv] (query head h reads KV head h / (heads /
// kv_heads)), logits times `scale`: out [n, heads, dv] (overwritten); probs
// [heads, n, n] gets each query's distribution (s <= t entries) when not
// null. `window` > 0: query t sees keys (t - window, t] only.
void ReferenceCausalAttention(const double* q, const double* k, const double* v,
                              int64_t n, int heads, int kv_heads, int d, int dv,
                              double scale, double* out, double* probs,
                              int window = 0);

// Perplexity of `docs` (each token sequence predicts its own next tokens:
// positions 1..T-1 from 0..T-2): exp(total NLL / predicted tokens). Documents
// shorter than 2 tokens are skipped; InvalidArgument if none predict anything.
struct PerplexityResult {
  double perplexity = 0.0;
  double mean_nll = 0.0;  // nats per predicted token
  int64_t predicted = 0;  // tokens scored
};
absl::StatusOr<PerplexityResult> Perplexity(
    const ModelWeights& weights, const std::vector<std::vector<int32_t>>& docs);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_FORWARD_H_
