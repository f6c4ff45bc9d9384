// KV pool ops (kv.cuh).
#include <string>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/kv.cuh"

namespace latentkv::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per element of (token, KV head): K, then V, then the position.
template <typename E>
__global__ void WriteKvKernel(const float* k, const float* v,
                              const int32_t* pos, int64_t n, int32_t nkv,
                              int32_t dqk, int32_t dvo, const int64_t* slot,
                              typename E::Storage* kp, typename E::Storage* vp,
                              int32_t* pos_pool, const float* k_scale,
                              const float* v_scale) {
  const int64_t width = int64_t{dqk} + dvo + 1;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
       i < n * nkv * width; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / width;  // t * nkv + h
    const int64_t e = i % width;
    const int32_t h = static_cast<int32_t>(row % nkv);
    const int64_t s = slot[row];
    if (e < dqk) {
      const float inv = k_scale == nullptr ? 1.0f : 1.0f / k_scale[h];
      StoreKv<E>(kp + s * dqk, e, k[row * dqk + e], inv);
    } else if (e < dqk + dvo) {
      const float inv = v_scale == nullptr ? 1.0f : 1.0f / v_scale[h];
      StoreKv<E>(vp + s * dvo, e - dqk, v[row * dvo + (e - dqk)], inv);
    } else {
      pos_pool[s] = pos[row / nkv];
    }
  }
}

// Packed rows <-> slots, one thread per byte of a row: a row is the int32
// position, then K, then V bytes (KvRowBytes).
__global__ void GatherRowsKernel(const uint8_t* kp, const uint8_t* vp,
                                 const int32_t* pos_pool, int64_t kb,
                                 int64_t vb, const int64_t* slots, int64_t n,
                                 uint8_t* rows) {
  const int64_t rb = 4 + kb + vb;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * rb;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / rb, b = i % rb;
    const int64_t s = slots[r];
    uint8_t v;
    if (b < 4) {
      v = reinterpret_cast<const uint8_t*>(pos_pool + s)[b];
    } else if (b < 4 + kb) {
      v = kp[s * kb + (b - 4)];
    } else {
      v = vp[s * vb + (b - 4 - kb)];
    }
    rows[i] = v;
  }
}

__global__ void ScatterRowsKernel(uint8_t* kp, uint8_t* vp, int32_t* pos_pool,
                                  int64_t kb, int64_t vb, const int64_t* slots,
                                  int64_t n, const uint8_t* rows) {
  const int64_t rb = 4 + kb + vb;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * rb;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / rb, b = i % rb;
    const int64_t s = slots[r];
    if (b < 4) {
      reinterpret_cast<uint8_t*>(pos_pool + s)[b] = rows[i];
    } else if (b < 4 + kb) {
      kp[s * kb + (b - 4)] = rows[i];
    } else {
      vp[s * vb + (b - 4 - kb)] = rows[i];
    }
  }
}

// k_pos[i] = pool position of slot i.
__global__ void SlotPositionsKernel(const int32_t* pos_pool,
                                    const int64_t* slots, int64_t n,
                                    int32_t* k_pos) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    k_pos[i] = pos_pool[slots[i]];
  }
}

// The f32 dot of window query (w, g) with slot i's key, as the CPU: K
// converted with the head's scale, f32 products summed in f32.
template <typename E>
__device__ float WindowDot(const float* q, int32_t group, int32_t d, int64_t w,
                           int32_t g, const typename E::Storage* kp,
                           int64_t slot, float ks) {
  const float* qr = q + (w * group + g) * d;
  float dot = 0.0f;
  for (int32_t j = 0; j < d; ++j) {
    dot = fmaf(qr[j], LoadKv<E>(kp + slot * d, j, ks), dot);
  }
  return dot;
}

// One block per (window row w, query head g): max and sum (double) of the
// visible logits -> stats[(w * group + g) * 2 + {0, 1}].
template <typename E>
__global__ void WindowStatsKernel(const typename E::Storage* kp,
                                  const int64_t* slots, const int32_t* k_pos,
                                  int64_t n, const float* q,
                                  const int32_t* q_pos, int32_t group,
                                  int32_t d, float scale, const float* k_scale,
                                  double* stats) {
  const float ks = k_scale == nullptr ? 1.0f : *k_scale;
  const int64_t w = blockIdx.x / group;
  const int32_t g = static_cast<int32_t>(blockIdx.x % group);
  __shared__ double red[kThreads];
  double mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (k_pos[i] > q_pos[w]) continue;
    mx = fmax(
        mx, double{WindowDot<E>(q, group, d, w, g, kp, slots[i], ks)} * scale);
  }
  red[threadIdx.x] = mx;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) {
      red[threadIdx.x] = fmax(red[threadIdx.x], red[threadIdx.x + o]);
    }
    __syncthreads();
  }
  mx = red[0];
  __syncthreads();
  double sum = 0.0;
  if (mx != -INFINITY) {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      if (k_pos[i] > q_pos[w]) continue;
      sum += exp(double{WindowDot<E>(q, group, d, w, g, kp, slots[i], ks)} *
                     scale -
                 mx);
    }
  }
  red[threadIdx.x] = sum;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[blockIdx.x * 2] = mx;
    stats[blockIdx.x * 2 + 1] = red[0];
  }
}

// One thread per (g, slot): the sum over window rows of its probability.
template <typename E>
__global__ void WindowScoresKernel(const typename E::Storage* kp,
                                   const int64_t* slots, const int32_t* k_pos,
                                   int64_t n, const float* q,
                                   const int32_t* q_pos, int64_t n_w,
                                   int32_t group, int32_t d, float scale,
                                   const float* k_scale, const double* stats,
                                   float* scores) {
  const float ks = k_scale == nullptr ? 1.0f : *k_scale;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
       i < group * n; i += int64_t{gridDim.x} * blockDim.x) {
    const int32_t g = static_cast<int32_t>(i / n);
    const int64_t s = i % n;
    double acc = 0.0;
    for (int64_t w = 0; w < n_w; ++w) {
      const double mx = stats[(w * group + g) * 2];
      if (k_pos[s] > q_pos[w] || mx == -INFINITY) continue;
      const double logit =
          double{WindowDot<E>(q, group, d, w, g, kp, slots[s], ks)} * scale;
      acc += exp(logit - mx) / stats[(w * group + g) * 2 + 1];
    }
    scores[i] = static_cast<float>(acc);
  }
}

template <typename E>
void LaunchWindow(const KvPoolView& pool, int32_t head, const int64_t* slots,
                  int64_t n, const float* q, const int32_t* q_pos, int64_t n_w,
                  int32_t group, float scale, float* scores,
                  const int32_t* k_pos, double* stats, cudaStream_t stream) {
  using T = typename E::Storage;
  const T* kp = static_cast<const T*>(pool.k);
  // The head's K scale (device memory; fp8 only, else unused).
  const float* ks = pool.k_scale == nullptr ? nullptr : pool.k_scale + head;
  WindowStatsKernel<E>
      <<<static_cast<unsigned>(n_w * group), kThreads, 0, stream>>>(
          kp, slots, k_pos, n, q, q_pos, group, pool.d_qk, scale, ks, stats);
  WindowScoresKernel<E><<<GridFor(group * n), kThreads, 0, stream>>>(
      kp, slots, k_pos, n, q, q_pos, n_w, group, pool.d_qk, scale, ks, stats,
      scores);
}

std::string LaunchError(const char* what) {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? ""
                          : std::string(what) + ": " + cudaGetErrorString(e);
}

}  // namespace

std::string KvRunner::WriteKv(const float* k, const float* v,
                              const int32_t* pos, int64_t n,
                              const int64_t* slot, const KvPoolView& pool,
                              cudaStream_t stream) {
  if (n <= 0 || pool.n_kv_heads <= 0) return "";
  const int64_t count =
      n * pool.n_kv_heads * (int64_t{pool.d_qk} + pool.d_vo + 1);
  auto launch = [&](auto elem) {
    using E = decltype(elem);
    using T = typename E::Storage;
    WriteKvKernel<E><<<GridFor(count), kThreads, 0, stream>>>(
        k, v, pos, n, pool.n_kv_heads, pool.d_qk, pool.d_vo, slot,
        static_cast<T*>(pool.k), static_cast<T*>(pool.v), pool.pos,
        pool.k_scale, pool.v_scale);
  };
  if (!VisitKvElem(pool.dtype, launch)) return "WriteKv: not a KV dtype";
  return LaunchError("WriteKv");
}

std::string KvRunner::GatherKvRows(const KvPoolView& pool, const int64_t* slots,
                                   int64_t n, void* rows, cudaStream_t stream) {
  if (n <= 0) return "";
  const int64_t e = DTypeSize(pool.dtype);
  const int64_t kb = e * pool.d_qk, vb = e * pool.d_vo;
  GatherRowsKernel<<<GridFor(n * (4 + kb + vb)), kThreads, 0, stream>>>(
      static_cast<const uint8_t*>(pool.k), static_cast<const uint8_t*>(pool.v),
      pool.pos, kb, vb, slots, n, static_cast<uint8_t*>(rows));
  return LaunchError("GatherKvRows");
}

std::string KvRunner::ScatterKvRows(const KvPoolView& pool,
                                    const int64_t* slots, int64_t n,
                                    const void* rows, cudaStream_t stream) {
  if (n <= 0) return "";
  const int64_t e = DTypeSize(pool.dtype);
  const int64_t kb = e * pool.d_qk, vb = e * pool.d_vo;
  ScatterRowsKernel<<<GridFor(n * (4 + kb + vb)), kThreads, 0, stream>>>(
      static_cast<uint8_t*>(pool.k), static_cast<uint8_t*>(pool.v), pool.pos,
      kb, vb, slots, n, static_cast<const uint8_t*>(rows));
  return LaunchError("ScatterKvRows");
}

std::string KvRunner::MoveKvSlots(const KvPoolView& pool, const int64_t* src,
                                  const int64_t* dst, int64_t n,
                                  cudaStream_t stream) {
  if (n <= 0) return "";
  // Every source is gathered before any destination is written: the two
  // kernels are ordered on the stream.
  void* rows =
      staging_.Get(n * KvRowBytes(pool.dtype, pool.d_qk, pool.d_vo), stream);
  if (rows == nullptr) return "MoveKvSlots: out of device memory";
  std::string err = GatherKvRows(pool, src, n, rows, stream);
  if (!err.empty()) return err;
  return ScatterKvRows(pool, dst, n, rows, stream);
}

std::string KvRunner::WindowScores(const KvPoolView& pool, int32_t head,
                                   const int64_t* slots, int64_t n,
                                   const float* q, const int32_t* q_pos,
                                   int64_t n_w, int32_t group, float scale,
                                   float* scores, int32_t* k_pos,
                                   cudaStream_t stream) {
  if (n <= 0 || group <= 0) return "";
  SlotPositionsKernel<<<GridFor(n), kThreads, 0, stream>>>(pool.pos, slots, n,
                                                           k_pos);
  if (n_w <= 0) {
    cudaMemsetAsync(scores, 0, sizeof(float) * group * n, stream);
    return LaunchError("WindowScores");
  }
  auto* stats = static_cast<double*>(
      stats_.Get(n_w * group * 2 * int64_t{sizeof(double)}, stream));
  if (stats == nullptr) return "WindowScores: out of device memory";
  if (!VisitKvElem(pool.dtype, [&](auto elem) {
        LaunchWindow<decltype(elem)>(pool, head, slots, n, q, q_pos, n_w, group,
                                     scale, scores, k_pos, stats, stream);
      })) {
    return "WindowScores: not a KV dtype";
  }
  return LaunchError("WindowScores");
}

}  // namespace latentkv::kernels::cuda
