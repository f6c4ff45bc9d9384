// Latent paged attention on the device (kernels/ops.h PagedAttention): one
// kernel for decode and prefill over per-(sequence, KV head) CSR page lists,
// any d_qk != d_vo, any KV dtype (f32, bf16, f16, fp8 e4m3 with per-head
// scales). A block takes a tile of query rows times the GQA group of one KV
// head (the group shares each staged KV chunk: one read of the KV for all
// its query heads, FlashAttention-2's tiles with an online softmax), and
// one of `splits` parts of the page list (split-KV / flash-decoding when
// the batch alone does not fill the GPU; a second kernel merges the
// parts). The partition is launch_plan.h's PlanAttention.
// Masking is causal by position (a slot is visible when its stored position
// <= the query's), as on the CPU, so evicted gaps keep the mask right.
#ifndef LATENTKV_KERNELS_CUDA_ATTENTION_CUH_
#define LATENTKV_KERNELS_CUDA_ATTENTION_CUH_

#include <cuda_runtime_api.h>

#include <string>

#include "kernels/cuda/device_scratch.h"
#include "kernels/cuda/launch_plan.h"
#include "kernels/ops.h"

namespace latentkv::kernels::cuda {

class AttentionRunner {
 public:
  // Queues the attention of `a` (every pointer in device memory). When a
  // plan hint (total_q, max_q_rows, max_pages) is 0 the index arrays are
  // read back first (a synchronizing copy). An error message or "".
  std::string Run(const PagedAttentionArgs& a, const DeviceLimits& limits,
                  cudaStream_t stream);

 private:
  DeviceScratch partials_;
};

}  // namespace latentkv::kernels::cuda

#endif  // LATENTKV_KERNELS_CUDA_ATTENTION_CUH_
