// Matrix products y[n, rows] = x[n, cols] * W^T on the device (kernels/ops.h
// MatMul), for every weight dtype as stored:
//   n <= kGemvMaxRows: our GEMV, one warp per output row reading the row
//     once for all n inputs (quantized rows dequantized in registers);
//   larger n: cuBLAS SGEMM for f32 (no TF32), cuBLASLt bf16 GEMM for bf16
//     (activations split into hi + lo bf16 rows unless disabled; see
//     cuda_backend.h), our shared-memory tiled GEMM for f16 and the
//     quantized formats (weight tiles dequantized into shared memory).
// f32 accumulation everywhere. Thread-safety: one thread at a time.
#ifndef LATENTKV_KERNELS_CUDA_MATMUL_CUH_
#define LATENTKV_KERNELS_CUDA_MATMUL_CUH_

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "kernels/cuda/cublas_loader.h"
#include "kernels/cuda/device_scratch.h"
#include "kernels/cuda/launch_plan.h"
#include "kernels/ops.h"

namespace latentkv::kernels::cuda {

class MatMulEngine {
 public:
  MatMulEngine() = default;
  ~MatMulEngine();
  MatMulEngine(const MatMulEngine&) = delete;
  MatMulEngine& operator=(const MatMulEngine&) = delete;

  // Creates the cuBLAS handles on `stream`; an error message or "".
  std::string Init(cudaStream_t stream, int64_t cublas_workspace_bytes,
                   bool split_bf16_activations);

  // Queues y = x * W^T; an error message (unsupported layout, a cuBLAS
  // failure, out of memory for the scratch) or "".
  std::string MatMul(const float* x, int64_t n, const WeightView& w, float* y);

 private:
  std::string CublasLtBf16(const float* x, int64_t n, const WeightView& w,
                           float* y);

  cudaStream_t stream_ = nullptr;
  const CublasApi* api_ = nullptr;  // loaded by Init
  cublasHandle_t cublas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* lt_workspace_ = nullptr;
  int64_t lt_workspace_bytes_ = 0;
  bool split_ = true;
  // Scratch of the bf16 path (split activations and the doubled output),
  // grown on demand (only between steps: cudaMalloc synchronizes).
  DeviceScratch scratch_;
  // cuBLASLt algorithm per (m, n, k), found once by its heuristic.
  std::map<std::tuple<int64_t, int64_t, int64_t>, cublasLtMatmulAlgo_t> algos_;
};

}  // namespace latentkv::kernels::cuda

#endif  // LATENTKV_KERNELS_CUDA_MATMUL_CUH_
