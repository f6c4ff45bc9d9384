// The CUDA backend (cuda_backend.h): device memory, one stream, sticky
// errors, and the kernels of kernels/cuda/*.cu behind the Backend ops.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/kv.cuh"
#include "kernels/cuda/launch_plan.h"
#include "kernels/cuda/matmul.cuh"

namespace latentkv::kernels::cuda {
namespace {

absl::Status CudaStatus(cudaError_t e, std::string_view what) {
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat(std::string(what), ": ", cudaGetErrorName(e), " (",
                   cudaGetErrorString(e), ")");
  switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInitializationError:
    case cudaErrorStubLibrary:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorSystemNotReady:
      return absl::UnavailableError(msg);
    case cudaErrorInvalidDevice:
      return absl::InvalidArgumentError(msg);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

class CudaEvent final : public Event {
 public:
  CudaEvent(cudaEvent_t event, absl::Status recorded)
      : event_(event), recorded_(std::move(recorded)) {}
  ~CudaEvent() override {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  bool Done() override {
    if (!recorded_.ok()) return true;
    return cudaEventQuery(event_) != cudaErrorNotReady;
  }
  absl::Status Wait() override {
    if (!recorded_.ok()) return recorded_;
    return CudaStatus(cudaEventSynchronize(event_), "waiting for an event");
  }

 private:
  cudaEvent_t event_;
  absl::Status recorded_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const CudaBackendOptions& options, DeviceLimits limits)
      : options_(options), limits_(limits) {}
  ~CudaBackend() override {
    if (stream_ == nullptr) return;
    Bind();
    cudaStreamSynchronize(stream_);
    // The kernel families' handles and scratch go before their stream.
    matmul_.reset();
    attention_.reset();
    kv_.reset();
    cudaStreamDestroy(stream_);
  }

  absl::Status Init() {
    absl::Status st =
        CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice");
    if (!st.ok()) return st;
    st = CudaStatus(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                    "cudaStreamCreate");
    if (!st.ok()) return st;
    const std::string err =
        matmul_->Init(stream_, options_.cublas_workspace_bytes,
                      options_.split_bf16_activations);
    if (!err.empty()) return absl::UnavailableError(err);
    return absl::OkStatus();
  }

  std::string_view name() const override { return "cuda"; }

  // CUDA's current device is per host thread, and the engine calls from its
  // own thread (not the one that created the backend): every entry point
  // first makes this backend's device current (a thread-local compare when
  // it already is).
  void Bind() {
    thread_local int current = -1;
    if (current != options_.device) {
      Check(cudaSetDevice(options_.device), "cudaSetDevice");
      current = options_.device;
    }
  }

  void* Allocate(size_t bytes) override {
    Bind();
    void* p = nullptr;
    if (cudaMalloc(&p, std::max<size_t>(bytes, 1)) != cudaSuccess) {
      cudaGetLastError();  // out of memory is reported by Alloc, not sticky
      return nullptr;
    }
    return p;
  }
  void Free(void* ptr) override {
    Bind();
    if (ptr == nullptr) return;
    // Queued work may still use the buffer.
    cudaStreamSynchronize(stream_);
    Check(cudaFree(ptr), "cudaFree");
  }
  void CopyIn(void* dst, const void* host_src, size_t bytes) override {
    Bind();
    if (bytes == 0) return;
    Check(
        cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_),
        "CopyIn");
  }
  void CopyOut(void* host_dst, const void* src, size_t bytes) override {
    Bind();
    if (bytes == 0) return;
    Check(
        cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_),
        "CopyOut");
  }
  void Fill(void* dst, uint8_t value, size_t bytes) override {
    Bind();
    if (bytes == 0) return;
    Check(cudaMemsetAsync(dst, value, bytes, stream_), "Fill");
  }
  absl::Status Synchronize() override {
    Bind();
    Check(cudaGetLastError(), "a kernel launch");
    Check(cudaStreamSynchronize(stream_), "synchronize");
    absl::MutexLock lock(&mu_);
    return error_;
  }
  std::unique_ptr<Event> RecordEvent() override {
    Bind();
    cudaEvent_t ev = nullptr;
    absl::Status st = CudaStatus(
        cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "event");
    if (st.ok()) st = CudaStatus(cudaEventRecord(ev, stream_), "event record");
    if (!st.ok()) Fail(st);
    return std::make_unique<CudaEvent>(ev, std::move(st));
  }

  // The dtypes matmul.cu and elementwise.cu's embedding kernels decode; the
  // q5 and k-quant formats have no CUDA kernels yet.
  bool SupportsWeights(DType dtype) const override {
    switch (dtype) {
      case DType::kF32:
      case DType::kBF16:
      case DType::kF16:
      case DType::kQ8_0:
      case DType::kQ4_0:
      case DType::kQ4_1:
        return true;
      default:
        return false;
    }
  }

  void MatMul(const float* x, int64_t n, const WeightView& w,
              float* y) override {
    Bind();
    Report(matmul_->MatMul(x, n, w, y), "MatMul");
  }
  void MatMulGroup(const float* x, int64_t n, const WeightView* ws,
                   float* const* ys, int count) override {
    Bind();
    for (int i = 0; i < count; ++i) MatMul(x, n, ws[i], ys[i]);
  }
  void RmsNorm(const float* x, const float* weight, int64_t n, int64_t dim,
               float eps, float* y) override {
    Bind();
    Check(LaunchRmsNorm(x, weight, n, dim, eps, y, stream_), "RmsNorm");
  }
  void MapHeads(const float* x, int64_t n, int64_t heads, int64_t din,
                const float* maps, int64_t dout, float* y) override {
    Bind();
    Check(LaunchMapHeads(x, n, heads, din, maps, dout, y, stream_), "MapHeads");
  }
  void ApplyRope(float* x, int64_t n, int64_t heads, int64_t d,
                 int64_t rope_dims, const int32_t* positions,
                 const float* inv_freq) override {
    Bind();
    Check(LaunchRope(x, n, heads, d, rope_dims, positions, inv_freq, stream_),
          "Rope");
  }
  void SwiGlu(const float* gate, const float* up, int64_t n,
              float* out) override {
    Bind();
    Check(LaunchSwiGlu(gate, up, n, out, stream_), "SwiGlu");
  }
  void GeluTanhGlu(const float* gate, const float* up, int64_t n,
                   float* out) override {
    Bind();
    Check(LaunchGeluTanhGlu(gate, up, n, out, stream_), "GeluTanhGlu");
  }
  void AddInPlace(float* y, const float* x, int64_t n) override {
    Bind();
    Check(LaunchAddInPlace(y, x, n, stream_), "AddInPlace");
  }
  void Scale(float* x, int64_t n, float s) override {
    Bind();
    Check(LaunchScale(x, n, s, stream_), "Scale");
  }
  void AddRowBias(float* y, const float* bias, int64_t n,
                  int64_t dim) override {
    Bind();
    Check(LaunchAddRowBias(y, bias, n, dim, stream_), "AddRowBias");
  }
  void Embed(const WeightView& table, const int32_t* tokens, int64_t n,
             float* out) override {
    Bind();
    Check(LaunchEmbed(table, tokens, n, out, stream_), "Embed");
  }
  void GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t n,
                  float* out) override {
    Bind();
    Check(LaunchGatherRows(x, dim, rows, n, out, stream_), "GatherRows");
  }
  void ArgmaxRows(const float* x, int64_t rows, int64_t cols,
                  int32_t* out) override {
    Bind();
    Check(LaunchArgmaxRows(x, rows, cols, out, stream_), "ArgmaxRows");
  }
  void PagedAttention(const PagedAttentionArgs& args) override {
    Bind();
    Report(attention_->Run(args, limits_, stream_), "PagedAttention");
  }
  void WriteKv(const float* k, const float* v, const int32_t* pos, int64_t n,
               const int64_t* slot, const KvPoolView& pool) override {
    Bind();
    Report(kv_->WriteKv(k, v, pos, n, slot, pool, stream_), "WriteKv");
  }
  void MoveKvSlots(const KvPoolView& pool, const int64_t* src,
                   const int64_t* dst, int64_t n) override {
    Bind();
    Report(kv_->MoveKvSlots(pool, src, dst, n, stream_), "MoveKvSlots");
  }
  void GatherKvRows(const KvPoolView& pool, const int64_t* slots, int64_t n,
                    void* rows) override {
    Bind();
    Report(kv_->GatherKvRows(pool, slots, n, rows, stream_), "GatherKvRows");
  }
  void ScatterKvRows(const KvPoolView& pool, const int64_t* slots, int64_t n,
                     const void* rows) override {
    Bind();
    Bind();
    Report(kv_->ScatterKvRows(pool, slots, n, rows, stream_), "ScatterKvRows");
  }
  void WindowScores(const KvPoolView& pool, int32_t head, const int64_t* slots,
                    int64_t n, const float* q, const int32_t* q_pos,
                    int64_t n_w, int32_t group, float scale, float* scores,
                    int32_t* k_pos) override {
    Bind();
    Report(kv_->WindowScores(pool, head, slots, n, q, q_pos, n_w, group, scale,
                             scores, k_pos, stream_),
           "WindowScores");
  }

 private:
  void Fail(absl::Status st) {
    absl::MutexLock lock(&mu_);
    if (error_.ok()) error_ = std::move(st);
  }
  void Check(cudaError_t e, std::string_view what) {
    if (e != cudaSuccess) Fail(CudaStatus(e, what));
  }
  void Report(const std::string& err, std::string_view what) {
    if (err.empty()) return;
    const std::string msg = absl::StrCat(std::string(what), ": ", err);
    Fail(err.find("out of device memory") != std::string::npos
             ? absl::ResourceExhaustedError(msg)
             : absl::InternalError(msg));
  }

  const CudaBackendOptions options_;
  const DeviceLimits limits_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<MatMulEngine> matmul_ = std::make_unique<MatMulEngine>();
  std::unique_ptr<AttentionRunner> attention_ =
      std::make_unique<AttentionRunner>();
  std::unique_ptr<KvRunner> kv_ = std::make_unique<KvRunner>();
  // Events may be waited on from another thread (the engine's mailbox).
  absl::Mutex mu_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<DeviceInfo> QueryDevice(int device) {
  int count = 0;
  absl::Status st =
      CudaStatus(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (!st.ok()) return st;
  if (count == 0) return absl::UnavailableError("no CUDA device present");
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA device ", device, " does not exist (", count, " present)"));
  }
  cudaDeviceProp prop{};
  st = CudaStatus(cudaGetDeviceProperties(&prop, device),
                  "cudaGetDeviceProperties");
  if (!st.ok()) return st;
  DeviceInfo info;
  info.name = prop.name;
  info.sm_count = prop.multiProcessorCount;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.total_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  info.l2_bytes = prop.l2CacheSize;
  st = CudaStatus(cudaSetDevice(device), "cudaSetDevice");
  if (!st.ok()) return st;
  size_t free_b = 0, total_b = 0;
  st = CudaStatus(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  if (!st.ok()) return st;
  info.free_bytes = static_cast<int64_t>(free_b);
  return info;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    const CudaBackendOptions& options) {
  absl::StatusOr<DeviceInfo> info = QueryDevice(options.device);
  if (!info.ok()) return info.status();
  if (info->cc_major < 8) {
    return absl::UnavailableError(
        absl::StrCat("CUDA device ", options.device, " (", info->name,
                     ") has compute capability ", info->cc_major, ".",
                     info->cc_minor, "; latentkv is built for 8.0 and newer"));
  }
  int smem_optin = 0;
  absl::Status st = CudaStatus(
      cudaDeviceGetAttribute(
          &smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, options.device),
      "cudaDeviceGetAttribute");
  if (!st.ok()) return st;
  DeviceLimits limits;
  limits.sm_count = info->sm_count;
  limits.max_smem_per_block = smem_optin;
  auto backend = std::make_unique<CudaBackend>(options, limits);
  st = backend->Init();
  if (!st.ok()) return st;
  return backend;
}

absl::StatusOr<double> MeasureCopyBandwidth(int device, int64_t bytes,
                                            int reps) {
  if (bytes <= 0 || reps <= 0) {
    return absl::InvalidArgumentError("bytes and reps must be positive");
  }
  absl::Status st = CudaStatus(cudaSetDevice(device), "cudaSetDevice");
  if (!st.ok()) return st;
  void* a = nullptr;
  void* b = nullptr;
  cudaStream_t s = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  st = CudaStatus(cudaMalloc(&a, bytes), "cudaMalloc");
  if (st.ok()) st = CudaStatus(cudaMalloc(&b, bytes), "cudaMalloc");
  if (st.ok()) st = CudaStatus(cudaStreamCreate(&s), "cudaStreamCreate");
  if (st.ok()) st = CudaStatus(cudaEventCreate(&e0), "cudaEventCreate");
  if (st.ok()) st = CudaStatus(cudaEventCreate(&e1), "cudaEventCreate");
  if (st.ok()) st = CudaStatus(cudaMemsetAsync(a, 0x5a, bytes, s), "memset");
  std::vector<float> ms;
  for (int r = -1; st.ok() && r < reps; ++r) {  // r == -1: warm-up
    st = CudaStatus(cudaEventRecord(e0, s), "cudaEventRecord");
    if (st.ok()) {
      st = CudaStatus(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s),
                      "cudaMemcpyAsync");
    }
    if (st.ok()) st = CudaStatus(cudaEventRecord(e1, s), "cudaEventRecord");
    if (st.ok()) st = CudaStatus(cudaEventSynchronize(e1), "event sync");
    float t = 0;
    if (st.ok()) st = CudaStatus(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    if (st.ok() && r >= 0) ms.push_back(t);
  }
  if (e1 != nullptr) cudaEventDestroy(e1);
  if (e0 != nullptr) cudaEventDestroy(e0);
  if (s != nullptr) cudaStreamDestroy(s);
  if (b != nullptr) cudaFree(b);
  if (a != nullptr) cudaFree(a);
  if (!st.ok()) return st;
  std::sort(ms.begin(), ms.end());
  const double median_s = ms[ms.size() / 2] * 1e-3;
  return 2.0 * static_cast<double>(bytes) / median_s;
}

}  // namespace latentkv::kernels::cuda
