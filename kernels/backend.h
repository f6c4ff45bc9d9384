// The compute backend seam: the engine runs every op through a Backend, so a
// CUDA backend (kernels/cuda/, -DLATENTKV_WITH_CUDA=ON) can stand in for the
// CPU one, selected at run time by name from a registry.
//
// Memory: buffers handed to a backend's ops live in that backend's memory
// (host memory for "cpu"). `Alloc` returns an owning DeviceBuffer; CopyIn /
// CopyOut move bytes across, ordered with the ops on the backend's one
// stream: the host side of a copy must stay valid (and unread, for CopyOut)
// until Synchronize() returns. Errors of queued work are sticky and surface
// at Synchronize() as an absl::Status (the CPU backend runs everything
// synchronously and never fails there).
// Ops: shapes and semantics are those of kernels/ops.h, whose CPU functions
// are the reference every backend is tested against
// (kernels/backend_parity_test.cc runs every registered backend).
// Thread-safety: a Backend is used by one engine thread at a time.
#ifndef LATENTKV_KERNELS_BACKEND_H_
#define LATENTKV_KERNELS_BACKEND_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace latentkv::kernels {

class Backend;

// An allocation in a backend's memory, freed on destruction. Movable, not
// copyable; the backend must outlive it.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* backend, void* data, size_t bytes)
      : backend_(backend), data_(data), bytes_(bytes) {}
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : backend_(std::exchange(o.backend_, nullptr)),
        data_(std::exchange(o.data_, nullptr)),
        bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      backend_ = std::exchange(o.backend_, nullptr);
      data_ = std::exchange(o.data_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }
  Backend* backend() const { return backend_; }
  void Reset();

 private:
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// A point in a backend's queued work (a CUDA event on a GPU): lets the host
// wait for what was queued before it without draining the whole stream.
class Event {
 public:
  virtual ~Event() = default;
  // True once the work queued before the event has finished; never blocks.
  virtual bool Done() = 0;
  // Blocks until then; the error of that work, if it failed.
  virtual absl::Status Wait() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu" or "cuda".
  virtual std::string_view name() const = 0;

  // True when buffers of this backend are host memory the caller may read
  // and write directly (the CPU backend). Host-only features (codebook
  // layers) require it.
  virtual bool host_addressable() const { return false; }

  // Device memory. Allocate returns nullptr when out of memory; Alloc wraps
  // it (ResourceExhausted, naming `what`).
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  absl::StatusOr<DeviceBuffer> Alloc(size_t bytes, std::string_view what);
  // Copies ordered on the stream (see the file comment).
  virtual void CopyIn(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void CopyOut(void* host_dst, const void* src, size_t bytes) = 0;
  // dst[i] = `value` for `bytes` bytes.
  virtual void Fill(void* dst, uint8_t value, size_t bytes) = 0;
  // Blocks until queued work has finished; the first error of queued work
  // since the last call (sticky per backend instance on a GPU).
  virtual absl::Status Synchronize() = 0;
  // An event after the work queued so far.
  virtual std::unique_ptr<Event> RecordEvent() = 0;

  // True when MatMul / MatMulGroup / Embed on this backend read `dtype`
  // weights (kernels/ops.h shapes and layouts). Callers convert matrices of
  // other dtypes before handing them over (the model runner converts them to
  // f32 at load). CPU: every float and block-quantized weight dtype; CUDA:
  // f32, bf16, f16, q8_0, q4_0, q4_1.
  virtual bool SupportsWeights(DType dtype) const = 0;

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
  virtual void MapHeads(const float* x, int64_t n, int64_t heads, int64_t din,
                        const float* maps, int64_t dout, float* y) = 0;
  // Partial rotary as kernels::ApplyRope (ops.h): the first rope_dims
  // channels of each head of width d.
  virtual void ApplyRope(float* x, int64_t n, int64_t heads, int64_t d,
                         int64_t rope_dims, const int32_t* positions,
                         const float* inv_freq) = 0;
  virtual void SwiGlu(const float* gate, const float* up, int64_t n,
                      float* out) = 0;
  virtual void GeluTanhGlu(const float* gate, const float* up, int64_t n,
                           float* out) = 0;
  virtual void AddInPlace(float* y, const float* x, int64_t n) = 0;
  virtual void Scale(float* x, int64_t n, float s) = 0;
  virtual void AddRowBias(float* y, const float* bias, int64_t n,
                          int64_t dim) = 0;
  virtual void Embed(const WeightView& table, const int32_t* tokens, int64_t n,
                     float* out) = 0;
  virtual void GatherRows(const float* x, int64_t dim, const int32_t* rows,
                          int64_t n, float* out) = 0;
  // Greedy token choice on the backend (ops.h ArgmaxRows): out [rows] int32
  // in backend memory, so a greedy row's logits never leave the device.
  virtual void ArgmaxRows(const float* x, int64_t rows, int64_t cols,
                          int32_t* out) = 0;
  virtual void PagedAttention(const PagedAttentionArgs& args) = 0;
  // KV pool ops (ops.h): typed writes, slot moves (compaction and
  // copy-on-write), packed rows out of and into slots (export/import).
  // Every pointer, slot lists included, is in this backend's memory.
  virtual void WriteKv(const float* k, const float* v, const int32_t* pos,
                       int64_t n, const int64_t* slot,
                       const KvPoolView& pool) = 0;
  virtual void MoveKvSlots(const KvPoolView& pool, const int64_t* src,
                           const int64_t* dst, int64_t n) = 0;
  virtual void GatherKvRows(const KvPoolView& pool, const int64_t* slots,
                            int64_t n, void* rows) = 0;
  virtual void ScatterKvRows(const KvPoolView& pool, const int64_t* slots,
                             int64_t n, const void* rows) = 0;
  // SnapKV scores of a head's slots (eviction decisions stay on the host,
  // over these small arrays).
  virtual void WindowScores(const KvPoolView& pool, int32_t head,
                            const int64_t* slots, int64_t n, const float* q,
                            const int32_t* q_pos, int64_t n_w, int32_t group,
                            float scale, float* scores, int32_t* k_pos) = 0;
};

// "f32" | "q8" (flag values) -> ActivationQuant; InvalidArgument otherwise.
absl::StatusOr<ActivationQuant> ParseActivationQuant(std::string_view name);

// What a backend is made with. Defaults: exact f32 activations.
struct BackendOptions {
  // The CPU backend's products with block-quantized weights (ops.h
  // ActivationQuant). kQ8 on any other backend is InvalidArgument.
  ActivationQuant cpu_activations = ActivationQuant::kF32;
  // With kQ8: MatMulOptions::q8_min_inputs (>= 1).
  int64_t cpu_q8_min_inputs = 2;
};

// The CPU backend (always available).
std::unique_ptr<Backend> MakeCpuBackend(const BackendOptions& options = {});

// The backend registry. "cpu" is always registered; a CUDA build registers
// "cuda" (kernels/cuda/). Registering a name twice replaces the factory.
using BackendFactory =
    std::function<absl::StatusOr<std::unique_ptr<Backend>>()>;
void RegisterBackend(std::string name, BackendFactory factory);
// Names of the registered backends, sorted ("cpu" first).
std::vector<std::string> RegisteredBackends();

// Creates the backend called `name`. InvalidArgument for an unknown name;
// Unavailable for "cuda" in a build without CUDA, or whatever the factory
// answers (e.g. no device present). "cuda:N" is CUDA device N of those
// visible ("cuda" is "cuda:0"). `options` as BackendOptions says.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(
    std::string_view name, const BackendOptions& options = {});

// A device name split into its backend and ordinal: "cpu" -> {"cpu", 0},
// "cuda" -> {"cuda", 0}, "cuda:3" -> {"cuda", 3}. InvalidArgument for a
// malformed ordinal ("cuda:", "cuda:-1", "cuda:x", "cpu:1").
struct DeviceName {
  std::string backend;
  int ordinal = 0;
};
absl::StatusOr<DeviceName> ParseDeviceName(std::string_view name);

}  // namespace latentkv::kernels

#endif  // LATENTKV_KERNELS_BACKEND_H_
