// One converted attention layer's forward and analytic backward, for local
// distillation (distill.h): the squared error of its output against the
// source layer's, and the gradient with respect to its four projections.
//
// Shapes (row-major), for a sequence of n tokens at positions 0..n-1:
//   x [n, D] the layer's input (the source model's normed hidden states),
//   y [n, D] the target (the source layer's attention output W_o z),
//   wq [H*d, D], wk [K*d, D], wv [K*dv, D], wo [D, H*dv] the converted
//   layer (d = d_qk, dv = d_vo; query head h reads KV head h / (H/K)).
// The layer: q = x wq^T, k = x wk^T, v = x wv^T; the first rope_dims
// channels of each q/k head rotated (rotate-half, angle t * inv_freq[j]);
// causal softmax(q.k / sqrt(d)) per head; out = z wo^T.
// Loss = sum_t |out_t - y_t|^2. T is float (training) or double (the
// finite-difference check).
//
// Thread-safety: pure functions; BLAS may use its own threads.
#ifndef LATENTKV_MODEL_TRANSFORM_DISTILL_LAYER_H_
#define LATENTKV_MODEL_TRANSFORM_DISTILL_LAYER_H_

#include <cstdint>
#include <vector>

namespace latentkv::model::transform {

struct DistillShape {
  int hidden = 0, heads = 0, kv_heads = 0, d_qk = 0, d_vo = 0;
  int rope_dims = 0;                // <= d_qk, even
  const float* inv_freq = nullptr;  // [rope_dims / 2]
};

// The four projections of a converted layer (or their gradients).
template <typename T>
struct LayerParams {
  std::vector<T> q, k, v, o;
};

// Returns the loss and ADDS its gradient to *grad (sized like the params).
template <typename T>
double LayerLossAndGrad(const DistillShape& s, const LayerParams<T>& p,
                        const T* x, const T* y, int64_t n,
                        LayerParams<T>* grad);

// The layer's output out [n, D] (resized) for input x; its attention
// output before W_o, z [n, H * d_vo], too when z is not null.
template <typename T>
void LayerForward(const DistillShape& s, const LayerParams<T>& p, const T* x,
                  int64_t n, std::vector<T>* out, std::vector<T>* z);

// The loss alone (no gradient).
template <typename T>
double LayerLoss(const DistillShape& s, const LayerParams<T>& p, const T* x,
                 const T* y, int64_t n);

}  // namespace latentkv::model::transform

#endif  // LATENTKV_MODEL_TRANSFORM_DISTILL_LAYER_H_
