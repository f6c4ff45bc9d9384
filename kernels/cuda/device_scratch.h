// A grow-only device allocation for a kernel family's temporaries (split
// partials, staging rows, statistics). Host code; safe to include from
// plain C++ (no device functions).
#ifndef LATENTKV_KERNELS_CUDA_DEVICE_SCRATCH_H_
#define LATENTKV_KERNELS_CUDA_DEVICE_SCRATCH_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace latentkv::kernels::cuda {

// A grow-only device allocation for a kernel family's temporaries. Growing
// waits for `stream` first (queued work may still read the old buffer).
class DeviceScratch {
 public:
  DeviceScratch() = default;
  ~DeviceScratch() {
    if (data_ != nullptr) cudaFree(data_);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  // At least `bytes` bytes, or nullptr when the device is out of memory.
  void* Get(int64_t bytes, cudaStream_t stream) {
    if (bytes <= bytes_) return data_;
    cudaStreamSynchronize(stream);
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    bytes_ = 0;
    const int64_t rounded = (bytes + (int64_t{1} << 20) - 1) >> 20 << 20;
    if (cudaMalloc(&data_, rounded) != cudaSuccess) {
      cudaGetLastError();  // allocation failures are not sticky
      data_ = nullptr;
      return nullptr;
    }
    bytes_ = rounded;
    return data_;
  }

 private:
  void* data_ = nullptr;
  int64_t bytes_ = 0;
};

}  // namespace latentkv::kernels::cuda

#endif  // LATENTKV_KERNELS_CUDA_DEVICE_SCRATCH_H_
