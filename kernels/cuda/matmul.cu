// Matrix products on the device (matmul.cuh).
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/matmul.cuh"

namespace latentkv::kernels::cuda {
namespace {

constexpr int kGemvWarps = 8;  // output rows per GEMV block

// Weight element (row r, column k) of a row-major matrix in kind `kKind`
// (the DType value): f32/bf16/f16 elements or a block-quantized row.
template <int kKind>
__device__ __forceinline__ float WeightAt(const void* w, int64_t row_bytes,
                                          int64_t r, int64_t k) {
  const auto* row = static_cast<const uint8_t*>(w) + r * row_bytes;
  if constexpr (kKind == 0) {
    return reinterpret_cast<const float*>(row)[k];
  } else if constexpr (kKind == 1) {
    return Bf16ToF32Dev(reinterpret_cast<const uint16_t*>(row)[k]);
  } else if constexpr (kKind == 2) {
    return F16ToF32Dev(reinterpret_cast<const uint16_t*>(row)[k]);
  } else {
    constexpr int kBlockBytes = kKind == 3 ? 34 : kKind == 4 ? 18 : 20;
    return DequantElem<kKind>(row + (k / 32) * kBlockBytes,
                              static_cast<int>(k % 32));
  }
}

// One warp per output row, reading the row once for all kN inputs.
// Float kinds, vectorized (kVec: cols % 8 == 0 and 16-byte aligned rows and
// inputs): lane i reads 8 consecutive weights (16 bytes of bf16/f16, 32 of
// f32) at columns 8i, 8i + 256, ...; otherwise lane i reads columns i,
// i + 32, .... Quantized kinds: lane i takes whole blocks i, i + 32, ...
// (32 columns each, its scale read once), so a warp step covers 32
// consecutive blocks.
template <int kKind, int kN, bool kVec>
__global__ void __launch_bounds__(kGemvWarps * 32)
    GemvKernel(const float* __restrict__ x, int64_t rows, int64_t cols,
               const void* __restrict__ w, int64_t row_bytes,
               float* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t{blockIdx.x} * kGemvWarps + threadIdx.x / 32;
  if (r >= rows) return;  // whole warps leave together
  float acc[kN];
#pragma unroll
  for (int t = 0; t < kN; ++t) acc[t] = 0.0f;
  const auto* row = static_cast<const uint8_t*>(w) + r * row_bytes;
  if constexpr (kKind >= 3) {
    constexpr int kBlockBytes = kKind == 3 ? 34 : kKind == 4 ? 18 : 20;
    const int64_t blocks = cols / 32;
    for (int64_t b = lane; b < blocks; b += 32) {
      const uint8_t* blk = row + b * kBlockBytes;
#pragma unroll 8
      for (int j = 0; j < 32; ++j) {
        const float wv = DequantElem<kKind>(blk, j);
#pragma unroll
        for (int t = 0; t < kN; ++t) {
          acc[t] = fmaf(wv, x[t * cols + b * 32 + j], acc[t]);
        }
      }
    }
  } else if constexpr (kVec) {
    for (int64_t k = int64_t{lane} * 8; k < cols; k += 256) {
      float wv[8];
      if constexpr (kKind == 0) {
        const float4 a = *reinterpret_cast<const float4*>(
            reinterpret_cast<const float*>(row) + k);
        const float4 b = *reinterpret_cast<const float4*>(
            reinterpret_cast<const float*>(row) + k + 4);
        wv[0] = a.x, wv[1] = a.y, wv[2] = a.z, wv[3] = a.w;
        wv[4] = b.x, wv[5] = b.y, wv[6] = b.z, wv[7] = b.w;
      } else {
        const uint4 u = *reinterpret_cast<const uint4*>(
            reinterpret_cast<const uint16_t*>(row) + k);
        const uint32_t words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const auto lo = static_cast<uint16_t>(words[i] & 0xffffu);
          const auto hi = static_cast<uint16_t>(words[i] >> 16);
          if constexpr (kKind == 1) {
            wv[2 * i] = Bf16ToF32Dev(lo), wv[2 * i + 1] = Bf16ToF32Dev(hi);
          } else {
            wv[2 * i] = F16ToF32Dev(lo), wv[2 * i + 1] = F16ToF32Dev(hi);
          }
        }
      }
#pragma unroll
      for (int t = 0; t < kN; ++t) {
        const float4 a = *reinterpret_cast<const float4*>(x + t * cols + k);
        const float4 b = *reinterpret_cast<const float4*>(x + t * cols + k + 4);
        float s = acc[t];
        s = fmaf(wv[0], a.x, s);
        s = fmaf(wv[1], a.y, s);
        s = fmaf(wv[2], a.z, s);
        s = fmaf(wv[3], a.w, s);
        s = fmaf(wv[4], b.x, s);
        s = fmaf(wv[5], b.y, s);
        s = fmaf(wv[6], b.z, s);
        s = fmaf(wv[7], b.w, s);
        acc[t] = s;
      }
    }
  } else {
#pragma unroll 4
    for (int64_t k = lane; k < cols; k += 32) {
      const float wv = WeightAt<kKind>(w, row_bytes, r, k);
#pragma unroll
      for (int t = 0; t < kN; ++t) acc[t] = fmaf(wv, x[t * cols + k], acc[t]);
    }
  }
#pragma unroll
  for (int t = 0; t < kN; ++t) {
    const float s = WarpSum(acc[t]);
    if (lane == 0) y[t * rows + r] = s;
  }
}

template <int kKind, bool kVec>
void LaunchGemvShape(const float* x, int64_t n, int64_t rows, int64_t cols,
                     const void* w, int64_t row_bytes, float* y,
                     cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(CeilDiv(rows, kGemvWarps));
  const int threads = kGemvWarps * 32;
#define LATENTKV_GEMV(N)                                                \
  case N:                                                               \
    GemvKernel<kKind, N, kVec>                                          \
        <<<grid, threads, 0, stream>>>(x, rows, cols, w, row_bytes, y); \
    break;
  switch (n) {
    LATENTKV_GEMV(1)
    LATENTKV_GEMV(2)
    LATENTKV_GEMV(3)
    LATENTKV_GEMV(4)
    LATENTKV_GEMV(5)
    LATENTKV_GEMV(6)
    LATENTKV_GEMV(7)
    LATENTKV_GEMV(8)
    default:
      break;
  }
#undef LATENTKV_GEMV
}

template <int kKind>
void LaunchGemv(const float* x, int64_t n, int64_t rows, int64_t cols,
                const void* w, int64_t row_bytes, float* y,
                cudaStream_t stream) {
  const bool vec = kKind <= 2 && cols % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(x) % 16 == 0;
  if (vec) {
    LaunchGemvShape<kKind, true>(x, n, rows, cols, w, row_bytes, y, stream);
  } else {
    LaunchGemvShape<kKind, false>(x, n, rows, cols, w, row_bytes, y, stream);
  }
}

// Shared-memory tiled GEMM: a block computes a 64 x 64 tile of y (64 input
// rows x 64 weight rows) over k in steps of 32 (one quantized block per
// weight row), weights dequantized while staged; 256 threads, 4 x 4 each.
constexpr int kTm = 64, kTn = 64, kTk = 32;

template <int kKind>
__global__ void __launch_bounds__(256)
    TiledGemmKernel(const float* __restrict__ x, int64_t n, int64_t rows,
                    int64_t cols, const void* __restrict__ w, int64_t row_bytes,
                    float* __restrict__ y) {
  __shared__ float xs[kTk][kTm + 4];
  __shared__ float ws[kTk][kTn + 4];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t{blockIdx.y} * kTm;  // input rows
  const int64_t r0 = int64_t{blockIdx.x} * kTn;  // weight rows
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < cols; k0 += kTk) {
    // 64 x 32 of each operand, 8 elements per thread, k fastest (coalesced
    // reads of x rows and of float weight rows).
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int idx = tid + e * 256;
      const int kk = idx % kTk, mm = idx / kTk;
      const int64_t k = k0 + kk;
      const int64_t m = m0 + mm, r = r0 + mm;
      xs[kk][mm] = (m < n && k < cols) ? x[m * cols + k] : 0.0f;
      ws[kk][mm] =
          (r < rows && k < cols) ? WeightAt<kKind>(w, row_bytes, r, k) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTk; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = xs[kk][ty * 4 + i];
        b[i] = ws[kk][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= n) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t r = r0 + tx * 4 + j;
      if (r < rows) y[m * rows + r] = acc[i][j];
    }
  }
}

template <int kKind>
void LaunchTiled(const float* x, int64_t n, int64_t rows, int64_t cols,
                 const void* w, int64_t row_bytes, float* y,
                 cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(CeilDiv(rows, kTn)),
                  static_cast<unsigned>(CeilDiv(n, kTm)));
  TiledGemmKernel<kKind>
      <<<grid, 256, 0, stream>>>(x, n, rows, cols, w, row_bytes, y);
}

// xs[i] = bf16(x[i]); with the split also xs[n*cols + i] = bf16(x - hi).
__global__ void SplitBf16Kernel(const float* x, int64_t count, bool split,
                                uint16_t* xs) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = x[i];
    const uint16_t hi = F32ToBf16Dev(v);
    xs[i] = hi;
    if (split) xs[count + i] = F32ToBf16Dev(v - Bf16ToF32Dev(hi));
  }
}

// y[i] = d[i] + d[count + i]: the hi and lo halves' products summed.
__global__ void SumHalvesKernel(const float* d, int64_t count, float* y) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] = d[i] + d[count + i];
  }
}

std::string CublasError(const char* what, int status) {
  return std::string(what) + " failed (cuBLAS status " +
         std::to_string(status) + ")";
}

}  // namespace

MatMulEngine::~MatMulEngine() {
  if (lt_workspace_ != nullptr) cudaFree(lt_workspace_);
  if (lt_ != nullptr) api_->lt_destroy(lt_);
  if (cublas_ != nullptr) api_->destroy(cublas_);
}

std::string MatMulEngine::Init(cudaStream_t stream,
                               int64_t cublas_workspace_bytes,
                               bool split_bf16_activations) {
  stream_ = stream;
  split_ = split_bf16_activations;
  std::string load_error;
  api_ = LoadCublas(&load_error);
  if (api_ == nullptr) return load_error;
  cublasStatus_t st = api_->create(&cublas_);
  if (st != CUBLAS_STATUS_SUCCESS) return CublasError("cublasCreate", st);
  st = api_->set_stream(cublas_, stream);
  if (st != CUBLAS_STATUS_SUCCESS) return CublasError("cublasSetStream", st);
  // f32 products stay f32 (no TF32 tensor-core rounding).
  st = api_->set_math_mode(cublas_, CUBLAS_PEDANTIC_MATH);
  if (st != CUBLAS_STATUS_SUCCESS) return CublasError("cublasSetMathMode", st);
  st = api_->lt_create(&lt_);
  if (st != CUBLAS_STATUS_SUCCESS) return CublasError("cublasLtCreate", st);
  lt_workspace_bytes_ = cublas_workspace_bytes;
  if (lt_workspace_bytes_ > 0 &&
      cudaMalloc(&lt_workspace_, lt_workspace_bytes_) != cudaSuccess) {
    return "out of device memory for the cuBLASLt workspace";
  }
  return "";
}

std::string MatMulEngine::CublasLtBf16(const float* x, int64_t n,
                                       const WeightView& w, float* y) {
  const int64_t rows = w.rows, cols = w.cols;
  const int64_t act_rows = split_ ? 2 * n : n;
  const int64_t bytes = Bf16GemmScratchBytes(n, rows, cols, split_);
  void* scratch = scratch_.Get(bytes, stream_);
  if (scratch == nullptr) {
    return "out of device memory for " + std::to_string(bytes) +
           " bytes of matmul scratch";
  }
  auto* xs = static_cast<uint16_t*>(scratch);
  float* d =
      split_
          ? reinterpret_cast<float*>(static_cast<char*>(scratch) +
                                     Bf16GemmActivationBytes(n, cols, split_))
          : y;
  SplitBf16Kernel<<<GridFor(n * cols), 256, 0, stream_>>>(x, n * cols, split_,
                                                          xs);

  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  cublasStatus_t st = api_->lt_desc_create(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = api_->lt_desc_set(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
  }
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = api_->lt_desc_set(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
  }
  // Column-major views: W is [cols, rows] (ld cols), read transposed; the
  // activations [cols, act_rows]; the product [rows, act_rows], i.e. the
  // row-major y[act_rows, rows].
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = api_->lt_layout_create(&la, CUDA_R_16BF, cols, rows, cols);
  }
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = api_->lt_layout_create(&lb, CUDA_R_16BF, cols, act_rows, cols);
  }
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = api_->lt_layout_create(&lc, CUDA_R_32F, rows, act_rows, rows);
  }
  const auto key = std::make_tuple(rows, act_rows, cols);
  auto it = algos_.find(key);
  if (st == CUBLAS_STATUS_SUCCESS && it == algos_.end()) {
    st = api_->lt_pref_create(&pref);
    const uint64_t ws = static_cast<uint64_t>(lt_workspace_bytes_);
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = api_->lt_pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                             &ws, sizeof(ws));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS) {
      st =
          api_->lt_heuristic(lt_, op, la, lb, lc, lc, pref, 1, &result, &found);
    }
    if (st == CUBLAS_STATUS_SUCCESS && found == 0) {
      st = CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (st == CUBLAS_STATUS_SUCCESS) {
      it = algos_.emplace(key, result.algo).first;
    }
  }
  if (st == CUBLAS_STATUS_SUCCESS) {
    const float alpha = 1.0f, beta = 0.0f;
    st = api_->lt_matmul(lt_, op, &alpha, w.data, la, xs, lb, &beta, d, lc, d,
                         lc, &it->second, lt_workspace_, lt_workspace_bytes_,
                         stream_);
  }
  if (pref != nullptr) api_->lt_pref_destroy(pref);
  if (lc != nullptr) api_->lt_layout_destroy(lc);
  if (lb != nullptr) api_->lt_layout_destroy(lb);
  if (la != nullptr) api_->lt_layout_destroy(la);
  if (op != nullptr) api_->lt_desc_destroy(op);
  if (st != CUBLAS_STATUS_SUCCESS) return CublasError("cublasLtMatmul", st);
  if (split_) {
    SumHalvesKernel<<<GridFor(n * rows), 256, 0, stream_>>>(d, n * rows, y);
  }
  return "";
}

std::string MatMulEngine::MatMul(const float* x, int64_t n, const WeightView& w,
                                 float* y) {
  if (n <= 0 || w.rows <= 0) return "";
  if (w.layout != WeightLayout::kRowMajor) {
    return "the CUDA backend takes row-major weights only";
  }
  if (IsBlockQuantized(w.dtype) && w.cols % kQuantBlockElems != 0) {
    return "quantized weights need cols a multiple of 32";
  }
  const int64_t rb = DTypeRowBytes(w.dtype, w.cols);
  const MatMulPath path = ChooseMatMulPath(w.dtype, n, w.rows, w.cols);
  if (path == MatMulPath::kCublasSgemm) {
    const float alpha = 1.0f, beta = 0.0f;
    // Column-major: y^T [rows, n] = W [cols, rows]^T * x^T [cols, n].
    const cublasStatus_t st = api_->sgemm(
        cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows),
        static_cast<int>(n), static_cast<int>(w.cols), &alpha,
        static_cast<const float*>(w.data), static_cast<int>(w.cols), x,
        static_cast<int>(w.cols), &beta, y, static_cast<int>(w.rows));
    return st == CUBLAS_STATUS_SUCCESS ? "" : CublasError("cublasSgemm", st);
  }
  if (path == MatMulPath::kCublasLtBf16) {
    std::string err = CublasLtBf16(x, n, w, y);
    if (!err.empty()) return err;
    const cudaError_t e = cudaGetLastError();  // the split and sum kernels
    return e == cudaSuccess ? "" : cudaGetErrorString(e);
  }
  auto run = [&](auto kind) {
    constexpr int kKind = decltype(kind)::value;
    if (path == MatMulPath::kGemv) {
      LaunchGemv<kKind>(x, n, w.rows, w.cols, w.data, rb, y, stream_);
    } else {
      LaunchTiled<kKind>(x, n, w.rows, w.cols, w.data, rb, y, stream_);
    }
  };
  switch (w.dtype) {
    case DType::kF32:
      run(std::integral_constant<int, 0>{});
      break;
    case DType::kBF16:
      run(std::integral_constant<int, 1>{});
      break;
    case DType::kF16:
      run(std::integral_constant<int, 2>{});
      break;
    case DType::kQ8_0:
      run(std::integral_constant<int, 3>{});
      break;
    case DType::kQ4_0:
      run(std::integral_constant<int, 4>{});
      break;
    case DType::kQ4_1:
      run(std::integral_constant<int, 5>{});
      break;
    default:
      return "weights of dtype " + std::string(DTypeName(w.dtype)) +
             " are not supported";
  }
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}

}  // namespace latentkv::kernels::cuda
