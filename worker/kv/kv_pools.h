// The data plane of the paged KV cache: one engine's K, V and slot-position
// pools, per layer, in backend memory with the cache's KV dtype (f32, bf16,
// f16 or fp8_e4m3), and the fp8 scales. The KvCache page table
// (worker/cache/kv_cache.h) decides which slots hold what; every byte moves
// here, through backend ops driven by slot lists (writes happen in the model
// runner through view()).
//
// Layer l's pool: K [num_pages(l), page_size, d_qk(l)], V [.., d_vo(l)] in
// dtype, positions int32 [num_pages(l), page_size]; num_pages(l) =
// cache.allocator(l).num_pages(). fp8 stores fp8(x / scale) with one K and
// one V scale per (layer, KV head) (KvScales).
// Ownership: the DeviceBuffers belong to this object; the backend must
// outlive it. Thread-safety: not thread-safe; the engine thread's.
#ifndef LATENTKV_WORKER_KV_KV_POOLS_H_
#define LATENTKV_WORKER_KV_KV_POOLS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/cache/kv_cache.h"

namespace latentkv::worker {

// Per-(layer, KV head) fp8 scales: stored value = fp8(x / scale), so a
// scale of amax / 448 maps the largest magnitude onto fp8's largest finite.
struct KvScales {
  std::vector<std::vector<float>> k, v;  // [layer][kv head]
};

// Host pointers into an f32 pool of a host-addressable backend.
struct HostKvPool {
  float* k = nullptr;      // [num_pages, page_size, d_qk]
  float* v = nullptr;      // [num_pages, page_size, d_vo]
  int32_t* pos = nullptr;  // [num_pages, page_size]
};

class KvPools {
 public:
  // Allocates (and zeroes) the pools of every layer of `cache`. fp8 needs
  // `scales` with one positive finite K and V scale per (layer, KV head);
  // other dtypes ignore them. InvalidArgument for missing or bad scales;
  // ResourceExhausted when the backend has no memory for the pools.
  static absl::StatusOr<std::unique_ptr<KvPools>> Create(
      kernels::Backend* backend, const KvCache& cache, KvScales scales = {});

  kernels::Backend& backend() const { return *backend_; }
  DType dtype() const { return dtype_; }
  int32_t num_layers() const { return static_cast<int32_t>(layers_.size()); }
  // The view the kernels take (pointers in backend memory).
  const kernels::KvPoolView& view(int32_t layer) const {
    return layers_[layer].view;
  }
  // 1 unless the dtype is fp8.
  float k_scale(int32_t layer, int32_t head) const;
  float v_scale(int32_t layer, int32_t head) const;
  // Bytes of one packed row of `layer` (KvRowBytes, common/dtype.h).
  int64_t row_bytes(int32_t layer) const;

  // Applies a page-table move list to `layer`'s pool.
  absl::Status Apply(int32_t layer, const KvMoves& moves);
  // Appends the packed rows (position, K, V as stored) of `slots` of
  // `layer` to `rows`.
  absl::Status ReadRows(int32_t layer, const std::vector<int64_t>& slots,
                        std::string* rows);
  // Writes packed rows (row_bytes(layer) each, as ReadRows gives them) into
  // `slots` of `layer`. rows_bytes must be slots.size() * row_bytes(layer).
  absl::Status WriteRows(int32_t layer, const std::vector<int64_t>& slots,
                         const char* rows, size_t rows_bytes);
  // The f32 values of `slots` of (layer, head): k [n, d_qk], v [n, d_vo]
  // (may be null), pos [n] (may be null), n = slots.size().
  absl::Status ReadF32(int32_t layer, int32_t head,
                       const std::vector<int64_t>& slots, float* k, float* v,
                       int32_t* pos);
  // SnapKV scores of `slots` of (layer, head) on the backend: q [n_w, group,
  // d_qk] the window queries, q_pos [n_w]; writes scores [group, n] and the
  // slots' positions k_pos [n] to host memory.
  absl::Status WindowScores(int32_t layer, int32_t head,
                            const std::vector<int64_t>& slots, const float* q,
                            const int32_t* q_pos, int64_t n_w, int32_t group,
                            float scale, float* scores, int32_t* k_pos);
  // Host pointers into `layer`'s pool, for host-only features (codebook
  // layers): FailedPrecondition unless the backend is host-addressable and
  // the dtype f32.
  absl::StatusOr<HostKvPool> HostF32(int32_t layer) const;

 private:
  struct Layer {
    kernels::DeviceBuffer k, v, pos, k_scale, v_scale;
    kernels::KvPoolView view;
    std::vector<float> host_k_scale, host_v_scale;
  };
  KvPools() = default;
  // Grows the staging buffers to hold `slots` ids and `bytes` bytes.
  absl::Status Stage(size_t slots, size_t bytes);

  kernels::Backend* backend_ = nullptr;
  DType dtype_ = DType::kF32;
  std::vector<Layer> layers_;
  kernels::DeviceBuffer slot_stage_, row_stage_;
  std::string rows_tmp_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_KV_KV_POOLS_H_
