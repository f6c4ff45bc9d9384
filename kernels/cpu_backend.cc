// The CPU backend: host memory and the kernels of kernels/ops.h.
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/named_registry.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#ifdef LATENTKV_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace latentkv::kernels {
namespace {

// Alignment of Allocate()d buffers: one cache line / one zmm register.
constexpr size_t kAlignment = 64;
// Allocations from this size on are aligned to (and advised onto) huge pages.
constexpr size_t kHugePage = size_t{2} << 20;

// The CPU runs every op as it is called: an event is complete at once.
class DoneEvent final : public Event {
 public:
  bool Done() override { return true; }
  absl::Status Wait() override { return absl::OkStatus(); }
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& options) {
    matmul_.activations = options.cpu_activations;
    matmul_.q8_min_inputs = options.cpu_q8_min_inputs;
  }
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
  bool host_addressable() const override { return true; }
  void Fill(void* dst, uint8_t value, size_t bytes) override {
    if (bytes > 0) std::memset(dst, value, bytes);
  }
  void CopyIn(void* dst, const void* host_src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, host_src, bytes);
  }
  void CopyOut(void* host_dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(host_dst, src, bytes);
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }
  std::unique_ptr<Event> RecordEvent() override {
    return std::make_unique<DoneEvent>();
  }
  bool SupportsWeights(DType dtype) const override {
    return dtype != DType::kF8E4M3;  // a KV dtype only
  }
  bool PrefersPanels(DType dtype) const override {
    return kernels::PrefersPanels(dtype);
  }

  void MatMul(const float* x, int64_t n, const WeightView& w,
              float* y) override {
    kernels::MatMul(x, n, w, y, matmul_);
  }
  void MatMulGroup(const float* x, int64_t n, const WeightView* ws,
                   float* const* ys, int count) override {
    kernels::MatMulGroup(x, n, ws, ys, count, matmul_);
  }
  void RmsNorm(const float* x, const float* weight, int64_t n, int64_t dim,
               float eps, float* y) override {
    kernels::RmsNorm(x, weight, n, dim, eps, y);
  }
  void MapHeads(const float* x, int64_t n, int64_t heads, int64_t din,
                const float* maps, int64_t dout, float* y) override {
    kernels::MapHeads(x, n, heads, din, maps, dout, y);
  }
  void ApplyRope(float* x, int64_t n, int64_t heads, int64_t d,
                 int64_t rope_dims, const int32_t* positions,
                 const float* inv_freq) override {
    kernels::ApplyRope(x, n, heads, d, rope_dims, positions, inv_freq);
  }
  void SwiGlu(const float* gate, const float* up, int64_t n,
              float* out) override {
    kernels::SwiGlu(gate, up, n, out);
  }
  void GeluTanhGlu(const float* gate, const float* up, int64_t n,
                   float* out) override {
    kernels::GeluTanhGlu(gate, up, n, out);
  }
  void AddInPlace(float* y, const float* x, int64_t n) override {
    kernels::AddInPlace(y, x, n);
  }
  void Scale(float* x, int64_t n, float s) override { kernels::Scale(x, n, s); }
  void AddRowBias(float* y, const float* bias, int64_t n,
                  int64_t dim) override {
    kernels::AddRowBias(y, bias, n, dim);
  }
  void Embed(const WeightView& table, const int32_t* tokens, int64_t n,
             float* out) override {
    kernels::Embed(table, tokens, n, out);
  }
  void GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t n,
                  float* out) override {
    kernels::GatherRows(x, dim, rows, n, out);
  }
  void ArgmaxRows(const float* x, int64_t rows, int64_t cols,
                  int32_t* out) override {
    kernels::ArgmaxRows(x, rows, cols, out);
  }

  void PagedAttention(const PagedAttentionArgs& args) override {
    kernels::PagedAttention(args);
  }
  void WriteKv(const float* k, const float* v, const int32_t* pos, int64_t n,
               const int64_t* slot, const KvPoolView& pool) override {
    kernels::WriteKv(k, v, pos, n, slot, pool);
  }
  void MoveKvSlots(const KvPoolView& pool, const int64_t* src,
                   const int64_t* dst, int64_t n) override {
    kernels::MoveKvSlots(pool, src, dst, n);
  }
  void GatherKvRows(const KvPoolView& pool, const int64_t* slots, int64_t n,
                    void* rows) override {
    kernels::GatherKvRows(pool, slots, n, rows);
  }
  void ScatterKvRows(const KvPoolView& pool, const int64_t* slots, int64_t n,
                     const void* rows) override {
    kernels::ScatterKvRows(pool, slots, n, rows);
  }
  void WindowScores(const KvPoolView& pool, int32_t head, const int64_t* slots,
                    int64_t n, const float* q, const int32_t* q_pos,
                    int64_t n_w, int32_t group, float scale, float* scores,
                    int32_t* k_pos) override {
    kernels::WindowScoresFromPool(pool, head, slots, n, q, q_pos, n_w, group,
                                  scale, scores, k_pos);
  }

 private:
  MatMulOptions matmul_;
};

}  // namespace

void DeviceBuffer::Reset() {
  if (backend_ != nullptr && data_ != nullptr) backend_->Free(data_);
  backend_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

absl::StatusOr<DeviceBuffer> Backend::Alloc(size_t bytes,
                                            std::string_view what) {
  void* p = Allocate(bytes);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("backend ", std::string(name()), ": cannot allocate ",
                     bytes, " bytes for ", std::string(what)));
  }
  return DeviceBuffer(this, p, bytes);
}

absl::StatusOr<ActivationQuant> ParseActivationQuant(std::string_view name) {
  if (name == "f32") return ActivationQuant::kF32;
  if (name == "q8") return ActivationQuant::kQ8;
  return absl::InvalidArgumentError(absl::StrCat(
      "activations must be f32 or q8, got \"", std::string(name), "\""));
}

std::unique_ptr<Backend> MakeCpuBackend(const BackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

namespace {

NamedRegistry<BackendFactory>& Backends() {
  static NamedRegistry<BackendFactory>* r = [] {
    auto* reg = new NamedRegistry<BackendFactory>;
    reg->Register("cpu", []() -> absl::StatusOr<std::unique_ptr<Backend>> {
      return MakeCpuBackend();
    });
#ifdef LATENTKV_WITH_CUDA
    // CUDA device 0 of those visible (CUDA_VISIBLE_DEVICES picks the GPU).
    reg->Register("cuda", []() -> absl::StatusOr<std::unique_ptr<Backend>> {
      return cuda::MakeCudaBackend();
    });
#endif
    return reg;
  }();
  return *r;
}

}  // namespace

void RegisterBackend(std::string name, BackendFactory factory) {
  Backends().Register(std::move(name), std::move(factory));
}

std::vector<std::string> RegisteredBackends() {
  std::vector<std::string> names;
  for (std::string& n : Backends().Names()) {
    if (n != "cpu") names.push_back(std::move(n));
  }
  names.insert(names.begin(), "cpu");
  return names;
}

absl::StatusOr<DeviceName> ParseDeviceName(std::string_view name) {
  const size_t colon = name.find(':');
  DeviceName d;
  d.backend = std::string(name.substr(0, colon));
  if (colon == std::string_view::npos) return d;
  const std::string_view num = name.substr(colon + 1);
  if (d.backend != "cuda" || num.empty() || num.size() > 4 ||
      !std::all_of(num.begin(), num.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad device \"", std::string(name),
                     "\" (cpu, cuda or cuda:<ordinal>)"));
  }
  d.ordinal = std::stoi(std::string(num));
  return d;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(
    std::string_view name, const BackendOptions& options) {
  if (name == "cpu") return MakeCpuBackend(options);
  if (options.cpu_activations != ActivationQuant::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("int8 activations (q8) are a cpu backend option, not \"",
                     std::string(name), "\"'s"));
  }
  if (BackendFactory factory = Backends().Find(name)) return factory();
  if (name.substr(0, 5) == "cuda:") {
    absl::StatusOr<DeviceName> d = ParseDeviceName(name);
    if (!d.ok()) return d.status();
#ifdef LATENTKV_WITH_CUDA
    cuda::CudaBackendOptions options;
    options.device = d->ordinal;
    return cuda::MakeCudaBackend(options);
#endif
    name = "cuda";
  }
  if (name == "cuda") {
    return absl::UnavailableError(
        "latentkv was built without CUDA (-DLATENTKV_WITH_CUDA=ON)");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown backend \"", std::string(name),
      "\" (registered: ", absl::StrJoin(RegisteredBackends(), ", "), ")"));
}

}  // namespace latentkv::kernels
