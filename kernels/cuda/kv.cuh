// KV pool ops on the device (kernels/ops.h): typed writes into bf16/f16/
// f32/fp8 pools (the host conversions bit for bit), slot moves (compaction
// and copy-on-write, every source read before any destination is written),
// packed row gather/scatter (export/import for transfers and the kvstore),
// and SnapKV window scores read straight from the pool (double sums as on
// the CPU; deterministic: no atomics).
#ifndef LATENTKV_KERNELS_CUDA_KV_CUH_
#define LATENTKV_KERNELS_CUDA_KV_CUH_

#include <cuda_runtime_api.h>

#include <string>

#include "kernels/cuda/device_scratch.h"
#include "kernels/ops.h"

namespace latentkv::kernels::cuda {

class KvRunner {
 public:
  // Each queues its kernels on `stream`; an error message or "".
  std::string WriteKv(const float* k, const float* v, const int32_t* pos,
                      int64_t n, const int64_t* slot, const KvPoolView& pool,
                      cudaStream_t stream);
  std::string MoveKvSlots(const KvPoolView& pool, const int64_t* src,
                          const int64_t* dst, int64_t n, cudaStream_t stream);
  std::string GatherKvRows(const KvPoolView& pool, const int64_t* slots,
                           int64_t n, void* rows, cudaStream_t stream);
  std::string ScatterKvRows(const KvPoolView& pool, const int64_t* slots,
                            int64_t n, const void* rows, cudaStream_t stream);
  std::string WindowScores(const KvPoolView& pool, int32_t head,
                           const int64_t* slots, int64_t n, const float* q,
                           const int32_t* q_pos, int64_t n_w, int32_t group,
                           float scale, float* scores, int32_t* k_pos,
                           cudaStream_t stream);

 private:
  DeviceScratch staging_;  // MoveKvSlots' rows
  DeviceScratch stats_;    // WindowScores' per-(row, head) max and sum
};

}  // namespace latentkv::kernels::cuda

#endif  // LATENTKV_KERNELS_CUDA_KV_CUH_
