#include "model/transform/distill_layer.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "model/transform/forward.h"

namespace latentkv::model::transform {
namespace {

void Gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a,
          int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
              beta, c, ldc);
}
void Gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* a,
          int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
              tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
              beta, c, ldc);
}

// What the forward keeps for the backward.
template <typename T>
struct Activations {
  std::vector<T> q, k, v;  // roped q [n, H*d], k [n, K*d]; v [n, K*dv]
  std::vector<T> probs;    // [H, n, n] (lower triangle)
  std::vector<T> z;        // [n, H*dv]
  std::vector<T> out;      // [n, D]
};

template <typename T>
void Forward(const DistillShape& s, const LayerParams<T>& p, const T* x, int n,
             Activations<T>* a) {
  const int D = s.hidden, H = s.heads, K = s.kv_heads, d = s.d_qk, dv = s.d_vo,
            group = H / K;
  const int qd = H * d, kd = K * d, vd = K * dv, zd = H * dv;
  std::vector<T>& q = a->q;
  std::vector<T>& k = a->k;
  std::vector<T>& v = a->v;
  q.resize(static_cast<size_t>(n) * qd);
  k.resize(static_cast<size_t>(n) * kd);
  v.resize(static_cast<size_t>(n) * vd);
  Gemm(false, true, n, qd, D, T(1), x, D, p.q.data(), D, T(0), q.data(), qd);
  Gemm(false, true, n, kd, D, T(1), x, D, p.k.data(), D, T(0), k.data(), kd);
  Gemm(false, true, n, vd, D, T(1), x, D, p.v.data(), D, T(0), v.data(), vd);
  ReferenceRope(&q, n, H, d, s.rope_dims, s.inv_freq);
  ReferenceRope(&k, n, K, d, s.rope_dims, s.inv_freq);
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
  std::vector<T>& probs = a->probs;
  std::vector<T>& z = a->z;
  probs.assign(static_cast<size_t>(H) * n * n, T(0));
  z.assign(static_cast<size_t>(n) * zd, T(0));
  for (int h = 0; h < H; ++h) {
    const int g = h / group;
    for (int t = 0; t < n; ++t) {
      T* pr = &probs[(static_cast<size_t>(h) * n + t) * n];
      const T* qt = &q[static_cast<size_t>(t) * qd + h * d];
      T mx = -INFINITY;
      for (int u = 0; u <= t; ++u) {
        const T* ku = &k[static_cast<size_t>(u) * kd + g * d];
        T dot = 0;
        for (int i = 0; i < d; ++i) dot += qt[i] * ku[i];
        pr[u] = dot * scale;
        mx = std::max(mx, pr[u]);
      }
      T sum = 0;
      for (int u = 0; u <= t; ++u) sum += (pr[u] = std::exp(pr[u] - mx));
      T* zt = &z[static_cast<size_t>(t) * zd + h * dv];
      for (int u = 0; u <= t; ++u) {
        pr[u] /= sum;
        const T* vu = &v[static_cast<size_t>(u) * vd + g * dv];
        for (int i = 0; i < dv; ++i) zt[i] += pr[u] * vu[i];
      }
    }
  }
  a->out.resize(static_cast<size_t>(n) * D);
  Gemm(false, true, n, D, zd, T(1), z.data(), zd, p.o.data(), zd, T(0),
       a->out.data(), D);
}

template <typename T>
double Run(const DistillShape& s, const LayerParams<T>& p, const T* x,
           const T* y, int64_t n64, LayerParams<T>* grad) {
  const int n = static_cast<int>(n64), D = s.hidden, H = s.heads,
            K = s.kv_heads, d = s.d_qk, dv = s.d_vo, group = H / K;
  const int qd = H * d, kd = K * d, vd = K * dv, zd = H * dv;
  Activations<T> a;
  Forward(s, p, x, n, &a);
  const std::vector<T>&q = a.q, &k = a.k, &v = a.v, &probs = a.probs, &z = a.z;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
  std::vector<T>& out = a.out;
  double loss = 0.0;
  for (size_t i = 0; i < out.size(); ++i) {
    const T r = out[i] - y[i];
    loss += static_cast<double>(r) * r;
    out[i] = 2 * r;  // d loss / d out
  }
  if (grad == nullptr) return loss;
  const std::vector<T>& dout = out;
  Gemm(true, false, D, zd, n, T(1), dout.data(), D, z.data(), zd, T(1),
       grad->o.data(), zd);
  std::vector<T> dz(static_cast<size_t>(n) * zd);
  Gemm(false, false, n, zd, D, T(1), dout.data(), D, p.o.data(), zd, T(0),
       dz.data(), zd);
  std::vector<T> dq(q.size(), T(0)), dk(k.size(), T(0)), dvv(v.size(), T(0));
  std::vector<T> dp(n);
  for (int h = 0; h < H; ++h) {
    const int g = h / group;
    for (int t = 0; t < n; ++t) {
      const T* pr = &probs[(static_cast<size_t>(h) * n + t) * n];
      const T* dzt = &dz[static_cast<size_t>(t) * zd + h * dv];
      T dot_pdp = 0;
      for (int u = 0; u <= t; ++u) {
        const T* vu = &v[static_cast<size_t>(u) * vd + g * dv];
        T* dvu = &dvv[static_cast<size_t>(u) * vd + g * dv];
        T acc = 0;
        for (int i = 0; i < dv; ++i) {
          acc += dzt[i] * vu[i];
          dvu[i] += pr[u] * dzt[i];
        }
        dp[u] = acc;
        dot_pdp += pr[u] * acc;
      }
      const T* qt = &q[static_cast<size_t>(t) * qd + h * d];
      T* dqt = &dq[static_cast<size_t>(t) * qd + h * d];
      for (int u = 0; u <= t; ++u) {
        const T ds = pr[u] * (dp[u] - dot_pdp) * scale;
        if (ds == T(0)) continue;
        const T* ku = &k[static_cast<size_t>(u) * kd + g * d];
        T* dku = &dk[static_cast<size_t>(u) * kd + g * d];
        for (int i = 0; i < d; ++i) {
          dqt[i] += ds * ku[i];
          dku[i] += ds * qt[i];
        }
      }
    }
  }
  ReferenceRope(&dq, n, H, d, s.rope_dims, s.inv_freq, -1.0);
  ReferenceRope(&dk, n, K, d, s.rope_dims, s.inv_freq, -1.0);
  Gemm(true, false, qd, D, n, T(1), dq.data(), qd, x, D, T(1), grad->q.data(),
       D);
  Gemm(true, false, kd, D, n, T(1), dk.data(), kd, x, D, T(1), grad->k.data(),
       D);
  Gemm(true, false, vd, D, n, T(1), dvv.data(), vd, x, D, T(1), grad->v.data(),
       D);
  return loss;
}

}  // namespace

template <typename T>
double LayerLossAndGrad(const DistillShape& s, const LayerParams<T>& p,
                        const T* x, const T* y, int64_t n,
                        LayerParams<T>* grad) {
  return Run(s, p, x, y, n, grad);
}

template <typename T>
double LayerLoss(const DistillShape& s, const LayerParams<T>& p, const T* x,
                 const T* y, int64_t n) {
  return Run<T>(s, p, x, y, n, nullptr);
}

template <typename T>
void LayerForward(const DistillShape& s, const LayerParams<T>& p, const T* x,
                  int64_t n, std::vector<T>* out, std::vector<T>* z) {
  Activations<T> a;
  Forward(s, p, x, static_cast<int>(n), &a);
  *out = std::move(a.out);
  if (z != nullptr) *z = std::move(a.z);
}

template void LayerForward<float>(const DistillShape&,
                                  const LayerParams<float>&, const float*,
                                  int64_t, std::vector<float>*,
                                  std::vector<float>*);
template void LayerForward<double>(const DistillShape&,
                                   const LayerParams<double>&, const double*,
                                   int64_t, std::vector<double>*,
                                   std::vector<double>*);
template double LayerLossAndGrad<float>(const DistillShape&,
                                        const LayerParams<float>&, const float*,
                                        const float*, int64_t,
                                        LayerParams<float>*);
template double LayerLossAndGrad<double>(const DistillShape&,
                                         const LayerParams<double>&,
                                         const double*, const double*, int64_t,
                                         LayerParams<double>*);
template double LayerLoss<float>(const DistillShape&, const LayerParams<float>&,
                                 const float*, const float*, int64_t);
template double LayerLoss<double>(const DistillShape&,
                                  const LayerParams<double>&, const double*,
                                  const double*, int64_t);

}  // namespace latentkv::model::transform
