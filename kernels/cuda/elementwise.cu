// Elementwise kernels (elementwise.cuh).
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace latentkv::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One block per row: sum of squares in f32 (per-thread partials, then a
// warp and a block reduction), then the scaled row. y may alias x.
__global__ void RmsNormKernel(const float* x, const float* weight, int64_t dim,
                              float eps, float* y) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * dim;
  float* yr = y + row * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  __shared__ float partial[kThreads / 32];
  ss = WarpSum(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.0f;
    v = WarpSum(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float inv = rsqrtf(partial[0] / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    yr[i] = xr[i] * inv * weight[i];
  }
}

// One thread per (token, pair): the angle in double as on the CPU, then
// every head of the token.
__global__ void RopeKernel(float* x, int64_t n, int64_t heads, int64_t d,
                           int64_t rope_dims, const int32_t* positions,
                           const float* inv_freq) {
  const int64_t half = rope_dims / 2;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * half;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / half, j = i % half;
    const double angle =
        static_cast<double>(positions[t]) * static_cast<double>(inv_freq[j]);
    double sd, cd;
    sincos(angle, &sd, &cd);
    const float c = static_cast<float>(cd), s = static_cast<float>(sd);
    for (int64_t h = 0; h < heads; ++h) {
      float* lo = x + (t * heads + h) * d;
      const float a = lo[j], b = lo[j + half];
      lo[j] = a * c - b * s;
      lo[j + half] = b * c + a * s;
    }
  }
}

__global__ void SwiGluKernel(const float* gate, const float* up, int64_t n,
                             float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void GeluTanhGluKernel(const float* gate, const float* up, int64_t n,
                                  float* out) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = gate[i];
    const float t = tanhf(kSqrt2OverPi * (g + 0.044715f * g * g * g));
    out[i] = 0.5f * g * (1.0f + t) * up[i];
  }
}

__global__ void ScaleKernel(float* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] *= s;
  }
}

// Rows r = t * heads + h, grid-strided: y[r, :] = maps[h] x[r, :].
__global__ void MapHeadsKernel(const float* x, int64_t rows, int64_t heads,
                               int64_t din, const float* maps, int64_t dout,
                               float* y) {
  extern __shared__ float xs[];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * din;
    for (int64_t i = threadIdx.x; i < din; i += blockDim.x) xs[i] = xr[i];
    __syncthreads();
    const float* m = maps + (r % heads) * dout * din;
    for (int64_t o = threadIdx.x; o < dout; o += blockDim.x) {
      const float* mo = m + o * din;
      float s = 0.0f;
      for (int64_t i = 0; i < din; ++i) s = fmaf(mo[i], xs[i], s);
      y[r * dout + o] = s;
    }
    __syncthreads();  // xs is rewritten for the next row
  }
}

__global__ void AddRowBiasKernel(float* y, const float* bias, int64_t n,
                                 int64_t dim) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * dim;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] += bias[i % dim];
  }
}

__global__ void AddKernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] += x[i];
  }
}

// One block per token; out-of-range ids give zeros (as on the CPU).
template <typename E>
__global__ void EmbedFloatKernel(const typename E::Storage* table,
                                 int64_t vocab, int64_t dim,
                                 const int32_t* tokens, float* out) {
  const int64_t t = blockIdx.x;
  const int64_t tok = tokens[t];
  float* o = out + t * dim;
  const bool valid = tok >= 0 && tok < vocab;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    o[i] = valid ? LoadKv<E>(table + tok * dim, i, 1.0f) : 0.0f;
  }
}

template <int kKind>
__global__ void EmbedQuantKernel(const uint8_t* table, int64_t vocab,
                                 int64_t dim, int64_t row_bytes,
                                 int block_bytes, const int32_t* tokens,
                                 float* out) {
  const int64_t t = blockIdx.x;
  const int64_t tok = tokens[t];
  float* o = out + t * dim;
  const bool valid = tok >= 0 && tok < vocab;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    o[i] = valid ? DequantElem<kKind>(
                       table + tok * row_bytes + (i / 32) * block_bytes,
                       static_cast<int>(i % 32))
                 : 0.0f;
  }
}

__global__ void ArgmaxRowsKernel(const float* x, int64_t cols, int32_t* out) {
  const float* row = x + int64_t{blockIdx.x} * cols;
  float best = -INFINITY;
  int64_t best_i = INT64_MAX;  // none yet
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    if (row[i] > best) {  // a thread visits indices in increasing order
      best = row[i];
      best_i = i;
    }
  }
  __shared__ float vals[kThreads];
  __shared__ int64_t idxs[kThreads];
  vals[threadIdx.x] = best;
  idxs[threadIdx.x] = best_i;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) {
      const float v = vals[threadIdx.x + o];
      const int64_t i = idxs[threadIdx.x + o];
      // Candidates are never NaN; an unset one is (-inf, INT64_MAX).
      if (v > vals[threadIdx.x] ||
          (v == vals[threadIdx.x] && i < idxs[threadIdx.x])) {
        vals[threadIdx.x] = v;
        idxs[threadIdx.x] = i;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    // Nothing above -inf: index 0, as the CPU.
    out[blockIdx.x] = vals[0] > -INFINITY ? static_cast<int32_t>(idxs[0]) : 0;
  }
}

__global__ void GatherRowsKernel(const float* x, int64_t dim,
                                 const int32_t* rows, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * dim;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = x[int64_t{rows[i / dim]} * dim + i % dim];
  }
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, const float* weight, int64_t n,
                          int64_t dim, float eps, float* y,
                          cudaStream_t stream) {
  if (n <= 0 || dim <= 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(x, weight,
                                                                   dim, eps, y);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* x, int64_t n, int64_t heads, int64_t d,
                       int64_t rope_dims, const int32_t* positions,
                       const float* inv_freq, cudaStream_t stream) {
  if (n <= 0 || rope_dims < 2 || heads <= 0) return cudaSuccess;
  RopeKernel<<<GridFor(n * (rope_dims / 2)), kThreads, 0, stream>>>(
      x, n, heads, d, rope_dims, positions, inv_freq);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGlu(const float* gate, const float* up, int64_t n,
                         float* out, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  SwiGluKernel<<<GridFor(n), kThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchGeluTanhGlu(const float* gate, const float* up, int64_t n,
                              float* out, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  GeluTanhGluKernel<<<GridFor(n), kThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchMapHeads(const float* x, int64_t n, int64_t heads,
                           int64_t din, const float* maps, int64_t dout,
                           float* y, cudaStream_t stream) {
  if (n <= 0 || heads <= 0 || din <= 0 || dout <= 0) return cudaSuccess;
  if (din > 8192) return cudaErrorInvalidValue;
  const int64_t rows = n * heads;
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>(rows, int64_t{1} << 16));
  MapHeadsKernel<<<blocks, 128, din * sizeof(float), stream>>>(
      x, rows, heads, din, maps, dout, y);
  return cudaGetLastError();
}

cudaError_t LaunchAddRowBias(float* y, const float* bias, int64_t n,
                             int64_t dim, cudaStream_t stream) {
  if (n <= 0 || dim <= 0) return cudaSuccess;
  AddRowBiasKernel<<<GridFor(n * dim), kThreads, 0, stream>>>(y, bias, n, dim);
  return cudaGetLastError();
}

cudaError_t LaunchScale(float* x, int64_t n, float s, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  ScaleKernel<<<GridFor(n), kThreads, 0, stream>>>(x, n, s);
  return cudaGetLastError();
}

cudaError_t LaunchAddInPlace(float* y, const float* x, int64_t n,
                             cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  AddKernel<<<GridFor(n), kThreads, 0, stream>>>(y, x, n);
  return cudaGetLastError();
}

cudaError_t LaunchEmbed(const WeightView& table, const int32_t* tokens,
                        int64_t n, float* out, cudaStream_t stream) {
  if (n <= 0 || table.cols <= 0) return cudaSuccess;
  if (table.layout != WeightLayout::kRowMajor) return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(n);
  const int64_t vocab = table.rows, dim = table.cols;
  switch (table.dtype) {
    case DType::kF32:
      EmbedFloatKernel<F32Elem><<<grid, kThreads, 0, stream>>>(
          static_cast<const float*>(table.data), vocab, dim, tokens, out);
      break;
    case DType::kBF16:
      EmbedFloatKernel<Bf16Elem><<<grid, kThreads, 0, stream>>>(
          static_cast<const uint16_t*>(table.data), vocab, dim, tokens, out);
      break;
    case DType::kF16:
      EmbedFloatKernel<F16Elem><<<grid, kThreads, 0, stream>>>(
          static_cast<const uint16_t*>(table.data), vocab, dim, tokens, out);
      break;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1: {
      if (dim % 32 != 0) return cudaErrorInvalidValue;
      const int bb = DTypeBlockBytes(table.dtype);
      const int64_t rb = dim / 32 * bb;
      const auto* t = static_cast<const uint8_t*>(table.data);
      if (table.dtype == DType::kQ8_0) {
        EmbedQuantKernel<3>
            <<<grid, kThreads, 0, stream>>>(t, vocab, dim, rb, bb, tokens, out);
      } else if (table.dtype == DType::kQ4_0) {
        EmbedQuantKernel<4>
            <<<grid, kThreads, 0, stream>>>(t, vocab, dim, rb, bb, tokens, out);
      } else {
        EmbedQuantKernel<5>
            <<<grid, kThreads, 0, stream>>>(t, vocab, dim, rb, bb, tokens, out);
      }
      break;
    }
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t LaunchArgmaxRows(const float* x, int64_t rows, int64_t cols,
                             int32_t* out, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (cols <= 0) return cudaMemsetAsync(out, 0, rows * sizeof(int32_t), stream);
  ArgmaxRowsKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      x, cols, out);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const float* x, int64_t dim, const int32_t* rows,
                             int64_t n, float* out, cudaStream_t stream) {
  if (n <= 0 || dim <= 0) return cudaSuccess;
  GatherRowsKernel<<<GridFor(n * dim), kThreads, 0, stream>>>(x, dim, rows, n,
                                                              out);
  return cudaGetLastError();
}

}  // namespace latentkv::kernels::cuda
