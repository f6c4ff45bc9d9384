// Elementwise and row ops on the device: RMSNorm, RoPE (any per-layer
// inverse-frequency table), SwiGLU, GeGLU (tanh), residual add, scaling,
// embedding lookup (every weight dtype) and row gather. Semantics and shapes:
// kernels/ops.h, whose CPU functions are the references
// (kernels/backend_parity_test.cc). Each launcher queues one kernel on `stream`
// and returns the launch error.
#ifndef LATENTKV_KERNELS_CUDA_ELEMENTWISE_CUH_
#define LATENTKV_KERNELS_CUDA_ELEMENTWISE_CUH_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/ops.h"

namespace latentkv::kernels::cuda {

cudaError_t LaunchRmsNorm(const float* x, const float* weight, int64_t n,
                          int64_t dim, float eps, float* y,
                          cudaStream_t stream);
// One block per (row, head), the head's input staged in shared memory (din
// <= 8192 floats: InvalidValue above), each thread a strided set of outputs
// (an FMA chain over din in order).
cudaError_t LaunchMapHeads(const float* x, int64_t n, int64_t heads,
                           int64_t din, const float* maps, int64_t dout,
                           float* y, cudaStream_t stream);
cudaError_t LaunchRope(float* x, int64_t n, int64_t heads, int64_t d,
                       int64_t rope_dims, const int32_t* positions,
                       const float* inv_freq, cudaStream_t stream);
cudaError_t LaunchSwiGlu(const float* gate, const float* up, int64_t n,
                         float* out, cudaStream_t stream);
cudaError_t LaunchGeluTanhGlu(const float* gate, const float* up, int64_t n,
                              float* out, cudaStream_t stream);
cudaError_t LaunchAddInPlace(float* y, const float* x, int64_t n,
                             cudaStream_t stream);
cudaError_t LaunchScale(float* x, int64_t n, float s, cudaStream_t stream);
cudaError_t LaunchAddRowBias(float* y, const float* bias, int64_t n,
                             int64_t dim, cudaStream_t stream);
// Row-major tables only (the CUDA backend never packs panels).
cudaError_t LaunchEmbed(const WeightView& table, const int32_t* tokens,
                        int64_t n, float* out, cudaStream_t stream);
// One block per row: per-thread candidates (strictly greater wins, so the
// lowest index among equals; NaN never wins), then a block reduction that
// prefers the larger value, then the lower index.
cudaError_t LaunchArgmaxRows(const float* x, int64_t rows, int64_t cols,
                             int32_t* out, cudaStream_t stream);
cudaError_t LaunchGatherRows(const float* x, int64_t dim, const int32_t* rows,
                             int64_t n, float* out, cudaStream_t stream);

}  // namespace latentkv::kernels::cuda

#endif  // LATENTKV_KERNELS_CUDA_ELEMENTWISE_CUH_
