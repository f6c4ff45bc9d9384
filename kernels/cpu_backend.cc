// The CPU backend: host memory and the kernels of kernels/ops.h.
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/ops.h"

namespace latentkv::kernels {
namespace {

// Alignment of Allocate()d buffers: one cache line / one zmm register.
constexpr size_t kAlignment = 64;
// Allocations from this size on are aligned to (and advised onto) huge pages.
constexpr size_t kHugePage = size_t{2} << 20;

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }

  void* Allocate(size_t bytes) override {
    if (bytes >= kHugePage) {
      // Large buffers (packed weights) on 2 MiB pages where the kernel allows
      // (transparent huge pages in "madvise" mode): the matrix kernels read
      // several far-apart streams at once, each crossing a 4 KiB page every
      // 64 lines.
      const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
      void* p = std::aligned_alloc(kHugePage, rounded);
      if (p != nullptr) madvise(p, rounded, MADV_HUGEPAGE);
      return p;
    }
    const size_t rounded =
        (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
    return std::aligned_alloc(kAlignment, rounded);
  }
  void Free(void* ptr) override { std::free(ptr); }
  void CopyIn(void* dst, const void* host_src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, host_src, bytes);
  }
  void CopyOut(void* host_dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(host_dst, src, bytes);
  }
  void Synchronize() override {}
  bool PrefersPanels(DType dtype) const override {
    return kernels::PrefersPanels(dtype);
  }

  void MatMul(const float* x, int64_t n, const WeightView& w,
              float* y) override {
    kernels::MatMul(x, n, w, y);
  }
  void MatMulGroup(const float* x, int64_t n, const WeightView* ws,
                   float* const* ys, int count) override {
    kernels::MatMulGroup(x, n, ws, ys, count);
  }
  void RmsNorm(const float* x, const float* weight, int64_t n, int64_t dim,
               float eps, float* y) override {
    kernels::RmsNorm(x, weight, n, dim, eps, y);
  }
  void ApplyRope(float* x, int64_t n, int64_t heads, int64_t d,
                 const int32_t* positions, const float* inv_freq) override {
    kernels::ApplyRope(x, n, heads, d, positions, inv_freq);
  }
  void SwiGlu(const float* gate, const float* up, int64_t n,
              float* out) override {
    kernels::SwiGlu(gate, up, n, out);
  }
  void AddInPlace(float* y, const float* x, int64_t n) override {
    kernels::AddInPlace(y, x, n);
  }
  void Embed(const WeightView& table, const int32_t* tokens, int64_t n,
             float* out) override {
    kernels::Embed(table, tokens, n, out);
  }
  void PagedAttention(const PagedAttentionArgs& args) override {
    kernels::PagedAttention(args);
  }
  void WriteKv(const float* k, const float* v, const int32_t* pos, int64_t n,
               int32_t n_kv_heads, int32_t d_qk, int32_t d_vo,
               const int64_t* slot, float* k_pool, float* v_pool,
               int32_t* pos_pool) override {
    kernels::WriteKv(k, v, pos, n, n_kv_heads, d_qk, d_vo, slot, k_pool, v_pool,
                     pos_pool);
  }
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend() {
  return std::make_unique<CpuBackend>();
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name) {
  if (name == "cpu") return MakeCpuBackend();
  if (name == "cuda") {
    // The CUDA backend (kernels/cuda/, -DLATENTKV_WITH_CUDA=ON) hooks in here.
    return absl::UnavailableError(
        "latentkv was built without CUDA (-DLATENTKV_WITH_CUDA=ON)");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown backend \"", std::string(name), "\" (expected cpu or cuda)"));
}

}  // namespace latentkv::kernels
