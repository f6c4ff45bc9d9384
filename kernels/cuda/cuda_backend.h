// The CUDA backend: kernels/backend.h on one NVIDIA GPU (built with
// -DLATENTKV_WITH_CUDA=ON; registered as "cuda" in the backend registry).
//
// Memory: every buffer is device memory (cudaMalloc); host_addressable() is
// false. All work is queued on one non-blocking stream owned by the backend;
// CopyIn/CopyOut are cudaMemcpyAsync on it (pageable host memory, so the
// host side may be reused once the call returns for CopyIn; CopyOut's host
// bytes are valid after Synchronize()).
// Errors: launch and run-time errors are sticky: the first is kept and
// answered by every later Synchronize() (the device state after an illegal
// access is undefined, so the backend is unusable after one).
// Numerics (what the gpu tests check against the float64 references):
//   MatMul: f32 activations times the exact dequantized weights, f32
//   accumulation. f32 weights: our GEMV for n <= kGemvMaxRows, cuBLAS SGEMM
//   (no TF32) above. bf16 weights above kGemvMaxRows: cuBLASLt bf16 GEMM
//   with the activations split into two bf16 terms (x = hi + lo, both rows
//   in one GEMM that reads the weights once), within 2^-16 of |x| per
//   element of the f32 product, unless split_bf16_activations is false (one
//   bf16 term: 2^-9, faster prefill). f16 and the block-quantized formats:
//   our kernels, dequantizing inside the GEMV/GEMM tiles.
//   Attention, norms, RoPE, SwiGLU: f32 arithmetic, exp/sin/cos in f32
//   (RoPE angles reduced in double as on the CPU).
// Thread-safety: one engine thread at a time (as every Backend).
#ifndef LATENTKV_KERNELS_CUDA_CUDA_BACKEND_H_
#define LATENTKV_KERNELS_CUDA_CUDA_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace latentkv::kernels::cuda {

struct CudaBackendOptions {
  // CUDA device ordinal. Default 0.
  int device = 0;
  // bf16 GEMMs split the f32 activations into two bf16 terms (see the file
  // comment). Default true: results within the f32 product's tolerance.
  bool split_bf16_activations = true;
  // cuBLASLt workspace. Default 32 MiB (what cuBLAS recommends for Hopper).
  int64_t cublas_workspace_bytes = int64_t{32} << 20;
};

// Creates a backend on options.device. UNAVAILABLE when no CUDA device is
// present (or the driver is missing), INVALID_ARGUMENT for a bad ordinal.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    const CudaBackendOptions& options = {});

// What benchmarks and the worker report about a device.
struct DeviceInfo {
  std::string name;  // e.g. "NVIDIA H100 80GB HBM3"
  int sm_count = 0;  // streaming multiprocessors
  int cc_major = 0;  // compute capability
  int cc_minor = 0;
  int64_t total_bytes = 0;  // device memory
  int64_t free_bytes = 0;   // free at the time of the call
  int64_t l2_bytes = 0;
};
absl::StatusOr<DeviceInfo> QueryDevice(int device);

// Device-to-device copy bandwidth of `device` in bytes/s, counting bytes
// read plus bytes written (cudaMemcpyAsync of `bytes`, median of `reps`
// timed with events after a warm-up). The HBM roofline for benchmarks.
absl::StatusOr<double> MeasureCopyBandwidth(int device, int64_t bytes,
                                            int reps);

}  // namespace latentkv::kernels::cuda

#endif  // LATENTKV_KERNELS_CUDA_CUDA_BACKEND_H_
