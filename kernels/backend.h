// The compute backend seam: the engine runs every op through a Backend, so a
// CUDA backend (kernels/cuda/, -DLATENTKV_WITH_CUDA=ON) can stand in for the
// CPU one, selected at run time by name.
//
// Buffers handed to a backend's ops live in that backend's memory (host
// memory for "cpu"); Allocate/CopyIn/CopyOut move data across. Shapes and
// semantics of every op are those of kernels/ops.h, which is the reference.
// Thread-safety: a Backend is used by one engine thread at a time.
#ifndef LATENTKV_KERNELS_BACKEND_H_
#define LATENTKV_KERNELS_BACKEND_H_

#include <cstddef>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace latentkv::kernels {

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu" or "cuda".
  virtual std::string_view name() const = 0;

  // Device memory. Allocate returns nullptr when out of memory.
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  virtual void CopyIn(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void CopyOut(void* host_dst, const void* src, size_t bytes) = 0;
  // Blocks until queued work has finished.
  virtual void Synchronize() = 0;

  // True when MatMul on this backend is faster with `dtype` weights packed
  // into panels (ops.h, PackPanels) than row-major; the engine then packs its
  // matrices once at load into host memory from Allocate. Default: false.
  virtual bool PrefersPanels(DType dtype) const {
    (void)dtype;
    return false;
  }

  // Ops; see kernels/ops.h for shapes.
  virtual void MatMul(const float* x, int64_t n, const WeightView& w,
                      float* y) = 0;
  virtual void MatMulGroup(const float* x, int64_t n, const WeightView* ws,
                           float* const* ys, int count) = 0;
  virtual void RmsNorm(const float* x, const float* weight, int64_t n,
                       int64_t dim, float eps, float* y) = 0;
  virtual void ApplyRope(float* x, int64_t n, int64_t heads, int64_t d,
                         const int32_t* positions, const float* inv_freq) = 0;
  virtual void SwiGlu(const float* gate, const float* up, int64_t n,
                      float* out) = 0;
  virtual void AddInPlace(float* y, const float* x, int64_t n) = 0;
  virtual void Embed(const WeightView& table, const int32_t* tokens, int64_t n,
                     float* out) = 0;
  virtual void PagedAttention(const PagedAttentionArgs& args) = 0;
  virtual void WriteKv(const float* k, const float* v, const int32_t* pos,
                       int64_t n, int32_t n_kv_heads, int32_t d_qk,
                       int32_t d_vo, const int64_t* slot, float* k_pool,
                       float* v_pool, int32_t* pos_pool) = 0;
};

// The CPU backend (always available).
std::unique_ptr<Backend> MakeCpuBackend();

// Creates the backend called `name` ("cpu"; "cuda" when built with CUDA).
// Unknown or unavailable names give InvalidArgument / Unavailable.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name);

}  // namespace latentkv::kernels

#endif  // LATENTKV_KERNELS_BACKEND_H_
