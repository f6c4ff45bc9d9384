#include "worker/comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "worker/comm/nccl_status.h"
#include "worker/comm/poll_until.h"
#include "worker/comm/rendezvous_file.h"

namespace latentkv::comm {

static_assert(kNcclSuccess == ncclSuccess);
static_assert(kNcclUnhandledCudaError == ncclUnhandledCudaError);
static_assert(kNcclSystemError == ncclSystemError);
static_assert(kNcclInternalError == ncclInternalError);
static_assert(kNcclInvalidArgument == ncclInvalidArgument);
static_assert(kNcclInvalidUsage == ncclInvalidUsage);
static_assert(kNcclRemoteError == ncclRemoteError);
static_assert(kNcclInProgress == ncclInProgress);
static_assert(sizeof(ncclUniqueId) == NCCL_UNIQUE_ID_BYTES);

namespace {

// The unique-id file's key within the group's prefix.
constexpr char kUniqueIdKey[] = "nccl-unique-id";
// The staging buffer (BroadcastString, Barrier) starts at this size.
constexpr size_t kMinStagingBytes = 4096;

// Waiting for the unique-id file and for NCCL's asynchronous init/finalize:
// rare, long waits.
PollOptions SlowPoll() {
  return {.min_interval = absl::Milliseconds(1),
          .max_interval = absl::Milliseconds(20)};
}

// Waiting for a collective: decode-step all-reduces take tens of
// microseconds, so poll back to back first, then back off.
PollOptions CollectivePoll() {
  return {.spin = absl::Milliseconds(2),
          .min_interval = absl::Microseconds(50),
          .max_interval = absl::Microseconds(500)};
}

// INTERNAL for a failed CUDA runtime call; clears the thread's last-error
// state so that the error is not reported again by someone else's check.
absl::Status CudaStatus(cudaError_t e, absl::string_view what) {
  if (e == cudaSuccess) return absl::OkStatus();
  (void)cudaGetLastError();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorName(e), " (",
                                          cudaGetErrorString(e), ")"));
}

// The status of an NCCL call; `comm` (may be null) adds NCCL's last error.
absl::Status NcclStatus(ncclResult_t r, absl::string_view what,
                        ncclComm_t comm) {
  if (r == ncclSuccess) return absl::OkStatus();
  const char* detail = ncclGetLastError(comm);
  return NcclResultToStatus(r, what, detail != nullptr ? detail : "");
}

absl::Status Annotate(const absl::Status& s, absl::string_view where) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
}

// ncclCommGetAsyncError as one poll: true once every operation issued on
// `comm` has been handed to its stream (or init/finalize has finished).
absl::StatusOr<bool> NcclQuiet(ncclComm_t comm, absl::string_view op) {
  ncclResult_t state = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
  if (r != ncclSuccess) return NcclStatus(r, "ncclCommGetAsyncError", comm);
  if (state == ncclInProgress) return false;
  if (state != ncclSuccess) return NcclStatus(state, op, comm);
  return true;
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const NcclOptions& o)
      : rank_(o.rank), size_(o.size), device_(o.device), timeout_(o.timeout) {}

  ~NcclCommunicator() override {
    (void)cudaSetDevice(device_);
    if (comm_ != nullptr) {
      // Quiesce and free cleanly; a peer that has gone makes this abort.
      const ncclResult_t r = ncclCommFinalize(comm_);
      absl::Status s = NcclStatus(r == ncclInProgress ? ncclSuccess : r,
                                  "ncclCommFinalize", comm_);
      if (s.ok()) {
        s = PollUntil(absl::Now() + timeout_, SlowPoll(), "ncclCommFinalize",
                      [&] { return NcclQuiet(comm_, "ncclCommFinalize"); });
      }
      if (s.ok()) {
        (void)ncclCommDestroy(comm_);
      } else {
        (void)ncclCommAbort(comm_);
      }
      comm_ = nullptr;
    }
    if (staging_ != nullptr) (void)cudaFree(staging_);
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    (void)cudaGetLastError();
  }

  // Creates the stream and the staging buffer, then joins the group named by
  // `id` by `deadline` (the current device must be device_).
  absl::Status Init(const ncclUniqueId& id, absl::Time deadline) {
    const std::string where = Where("init");
    if (absl::Status s = CudaStatus(
            cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
            "cudaStreamCreateWithFlags");
        !s.ok()) {
      return Annotate(s, where);
    }
    if (absl::Status s = GrowStaging(kMinStagingBytes); !s.ok()) {
      return Annotate(s, where);
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = nullptr;
    const ncclResult_t r =
        ncclCommInitRankConfig(&comm, size_, id, rank_, &config);
    comm_ = comm;
    if (r != ncclSuccess && r != ncclInProgress) {
      return Fail(
          Annotate(NcclStatus(r, "ncclCommInitRankConfig", comm_), where));
    }
    return Fail(
        PollUntil(deadline, SlowPoll(),
                  absl::StrCat(where, ": waiting for all ", size_,
                               " ranks to join (ncclCommInitRankConfig)"),
                  [&]() -> absl::StatusOr<bool> {
                    absl::StatusOr<bool> quiet =
                        NcclQuiet(comm_, "ncclCommInitRankConfig");
                    if (!quiet.ok()) return Annotate(quiet.status(), where);
                    return quiet;
                  }));
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool device_memory() const override { return true; }

  absl::Status AllReduceSum(float* data, size_t n) override {
    if (n == 0) return Check("AllReduceSum");
    if (absl::Status s = CheckDevicePointer(data, "AllReduceSum", "data");
        !s.ok()) {
      return s;
    }
    return Run("AllReduceSum", /*after_device_work=*/true, [&] {
      return ncclAllReduce(data, data, n, ncclFloat, ncclSum, comm_, stream_);
    });
  }

  absl::Status AllGather(const float* in, size_t n, float* out) override {
    if (n == 0) return Check("AllGather");
    absl::Status s = CheckDevicePointer(in, "AllGather", "in");
    if (s.ok()) s = CheckDevicePointer(out, "AllGather", "out");
    if (!s.ok()) return s;
    // In place when in == out + rank * n, as NCCL defines it.
    return Run("AllGather", /*after_device_work=*/true, [&] {
      return ncclAllGather(in, out, n, ncclFloat, comm_, stream_);
    });
  }

  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (absl::Status s = CheckRoot("Broadcast", root); !s.ok()) return s;
    if (bytes == 0) return Check("Broadcast");
    if (absl::Status s = CheckDevicePointer(data, "Broadcast", "data");
        !s.ok()) {
      return s;
    }
    return Run("Broadcast", /*after_device_work=*/true, [&] {
      return ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_);
    });
  }

  // Same protocol as the default (root's length, then the payload), staged
  // through the device buffer since the string is host memory.
  absl::Status BroadcastString(std::string* bytes, int root) override {
    if (absl::Status s = CheckRoot("BroadcastString", root); !s.ok()) return s;
    uint64_t length = rank_ == root ? bytes->size() : 0;
    if (absl::Status s = BroadcastHost(&length, sizeof(length), root);
        !s.ok()) {
      return s;
    }
    if (rank_ != root) bytes->resize(length);
    if (length == 0) return absl::OkStatus();
    return BroadcastHost(bytes->data(), length, root);
  }

  // An all-reduce of one float of the staging buffer: it completes on a rank
  // only once every rank has contributed.
  absl::Status Barrier() override {
    return Run("Barrier", /*after_device_work=*/false, [&] {
      return ncclAllReduce(staging_, staging_, 1, ncclFloat, ncclSum, comm_,
                           stream_);
    });
  }

 private:
  std::string Where(absl::string_view op) const {
    return absl::StrCat("NCCL ", op, " (rank ", rank_, " of ", size_,
                        ", device ", device_, ")");
  }

  // OK unless an earlier call broke the communicator.
  absl::Status Check(absl::string_view op) const {
    if (broken_.ok()) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat(
        Where(op),
        ": communicator broken by an earlier error: ", broken_.message()));
  }

  // INVALID_ARGUMENT unless `p` is device (or managed) memory of device_:
  // NCCL would fault on anything else, corrupting the CUDA context.
  absl::Status CheckDevicePointer(const void* p, absl::string_view op,
                                  absl::string_view name) const {
    cudaPointerAttributes attr{};
    const cudaError_t e = p == nullptr ? cudaErrorInvalidValue
                                       : cudaPointerGetAttributes(&attr, p);
    if (e != cudaSuccess) (void)cudaGetLastError();
    if (e == cudaSuccess &&
        (attr.type == cudaMemoryTypeDevice ||
         attr.type == cudaMemoryTypeManaged) &&
        attr.device == device_) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(
        Where(op), ": `", name, "` must be device memory of device ", device_,
        " (the NCCL communicator's buffers are device pointers), got ",
        e != cudaSuccess
            ? cudaGetErrorName(e)
            : absl::StrCat("memory type ", static_cast<int>(attr.type),
                           " on device ", attr.device)));
  }

  // Aborts the NCCL communicator after an error (kernels still waiting for
  // peers quit) and keeps the error for later calls. OK passes through.
  absl::Status Fail(absl::Status s) {
    if (s.ok()) return s;
    if (comm_ != nullptr) {
      (void)ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    if (broken_.ok()) broken_ = s;
    return s;
  }

  // Error unless an NCCL call was accepted (done or in progress).
  absl::Status Issued(ncclResult_t r, absl::string_view call) {
    if (r == ncclSuccess || r == ncclInProgress) return absl::OkStatus();
    return NcclStatus(r, call, comm_);
  }

  // Waits until every operation issued so far has been handed to stream_
  // (non-blocking NCCL may still be enqueuing) and stream_ is idle.
  absl::Status WaitIdle(absl::Time deadline, absl::string_view where) {
    return PollUntil(deadline, CollectivePoll(),
                     absl::StrCat(where, ": waiting for the other ranks"),
                     [&]() -> absl::StatusOr<bool> {
                       absl::StatusOr<bool> quiet =
                           NcclQuiet(comm_, "NCCL operation");
                       if (!quiet.ok()) return Annotate(quiet.status(), where);
                       if (!*quiet) return false;
                       const cudaError_t e = cudaStreamQuery(stream_);
                       if (e == cudaSuccess) return true;
                       if (e == cudaErrorNotReady) {
                         (void)cudaGetLastError();
                         return false;
                       }
                       return Annotate(CudaStatus(e, "cudaStreamQuery"), where);
                     });
  }

  // One collective on stream_: `issue` calls NCCL; then waits for it. Every
  // failure breaks the communicator. With `after_device_work`, first waits
  // for all work queued on the device (the caller's data may still be in
  // flight on another stream).
  template <typename F>
  absl::Status Run(absl::string_view op, bool after_device_work, F&& issue) {
    if (absl::Status s = Check(op); !s.ok()) return s;
    const std::string where = Where(op);
    if (absl::Status s = CudaStatus(cudaSetDevice(device_), "cudaSetDevice");
        !s.ok()) {
      return Fail(Annotate(s, where));
    }
    if (after_device_work) {
      if (absl::Status s = CudaStatus(cudaDeviceSynchronize(),
                                      "cudaDeviceSynchronize (work queued "
                                      "before the collective failed)");
          !s.ok()) {
        return Fail(Annotate(s, where));
      }
    }
    const absl::Time deadline = absl::Now() + timeout_;
    if (absl::Status s = Issued(issue(), op); !s.ok()) {
      return Fail(Annotate(s, where));
    }
    return Fail(WaitIdle(deadline, where));
  }

  // Replaces the staging buffer with one of at least `bytes` bytes (its
  // contents are not kept). The stream must be idle.
  absl::Status GrowStaging(size_t bytes) {
    if (bytes <= staging_bytes_) return absl::OkStatus();
    const size_t want = std::max({bytes, 2 * staging_bytes_, kMinStagingBytes});
    if (staging_ != nullptr) {
      (void)cudaFree(staging_);
      staging_ = nullptr;
      staging_bytes_ = 0;
    }
    if (absl::Status s = CudaStatus(cudaMalloc(&staging_, want),
                                    absl::StrCat("cudaMalloc(", want, ")"));
        !s.ok()) {
      staging_ = nullptr;
      return s;
    }
    staging_bytes_ = want;
    return absl::OkStatus();
  }

  // Broadcasts `bytes` host bytes at `host` from `root` through staging_.
  absl::Status BroadcastHost(void* host, size_t bytes, int root) {
    constexpr absl::string_view kOp = "BroadcastString";
    if (absl::Status s = Check(kOp); !s.ok()) return s;
    const std::string where = Where(kOp);
    if (absl::Status s = CudaStatus(cudaSetDevice(device_), "cudaSetDevice");
        !s.ok()) {
      return Fail(Annotate(s, where));
    }
    if (absl::Status s = GrowStaging(bytes); !s.ok()) {
      return Fail(Annotate(s, where));
    }
    const absl::Time deadline = absl::Now() + timeout_;
    if (rank_ == root) {
      if (absl::Status s =
              CudaStatus(cudaMemcpyAsync(staging_, host, bytes,
                                         cudaMemcpyHostToDevice, stream_),
                         "cudaMemcpyAsync to the device");
          !s.ok()) {
        return Fail(Annotate(s, where));
      }
    }
    if (absl::Status s = Issued(ncclBroadcast(staging_, staging_, bytes,
                                              ncclUint8, root, comm_, stream_),
                                "ncclBroadcast");
        !s.ok()) {
      return Fail(Annotate(s, where));
    }
    // Nothing else goes on the stream before NCCL has finished issuing.
    if (absl::Status s = WaitIdle(deadline, where); !s.ok()) return Fail(s);
    if (rank_ == root) return absl::OkStatus();
    if (absl::Status s =
            CudaStatus(cudaMemcpyAsync(host, staging_, bytes,
                                       cudaMemcpyDeviceToHost, stream_),
                       "cudaMemcpyAsync to the host");
        !s.ok()) {
      return Fail(Annotate(s, where));
    }
    return Fail(WaitIdle(deadline, where));
  }

  const int rank_;
  const int size_;
  const int device_;
  const absl::Duration timeout_;
  ncclComm_t comm_ = nullptr;      // null once aborted
  cudaStream_t stream_ = nullptr;  // non-blocking; idle between calls
  void* staging_ = nullptr;        // [staging_bytes_] device bytes
  size_t staging_bytes_ = 0;
  absl::Status broken_;  // OK while usable; else the first error.
};

absl::Status Validate(const NcclOptions& o) {
  if (o.size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("NcclOptions.size must be >= 1, got ", o.size));
  }
  if (o.rank < 0 || o.rank >= o.size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "NcclOptions.rank ", o.rank, " outside [0, ", o.size, ")"));
  }
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("NcclOptions.timeout must be > 0, got ",
                     absl::FormatDuration(o.timeout)));
  }
  if (o.size > 1 && o.rendezvous_dir.empty()) {
    return absl::InvalidArgumentError(
        "NcclOptions.rendezvous_dir is required when size > 1");
  }
  if (o.device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("NcclOptions.device must be >= 0, got ", o.device));
  }
  return absl::OkStatus();
}

// Rank 0 creates the id and publishes it (size > 1); the others read it.
// `*published` is the file rank 0 wrote (to remove once init has ended).
absl::StatusOr<ncclUniqueId> ExchangeUniqueId(const NcclOptions& o,
                                              absl::Time deadline,
                                              std::string* published) {
  ncclUniqueId id;
  if (o.rank == 0) {
    if (absl::Status s =
            NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId", nullptr);
        !s.ok()) {
      return s;
    }
    if (o.size == 1) return id;
  }
  std::error_code ec;
  std::filesystem::create_directories(o.rendezvous_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("NcclOptions.rendezvous_dir '", o.rendezvous_dir,
                     "' cannot be created: ", ec.message()));
  }
  const std::string path =
      RendezvousPath(o.rendezvous_dir, o.prefix, kUniqueIdKey);
  if (o.rank == 0) {
    const absl::string_view blob(reinterpret_cast<const char*>(&id),
                                 sizeof(id));
    if (absl::Status s = PublishBlob(path, blob); !s.ok()) return s;
    *published = path;
    return id;
  }
  absl::StatusOr<std::string> blob =
      ReadBlob(path, sizeof(id), deadline, SlowPoll());
  if (!blob.ok()) return blob.status();
  std::memcpy(&id, blob->data(), sizeof(id));
  return id;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const NcclOptions& options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  const absl::Time deadline = absl::Now() + options.timeout;
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::UnavailableError(absl::StrCat(
        "NCCL communicator: no usable CUDA device: ", cudaGetErrorName(e), " (",
        cudaGetErrorString(e), ")"));
  }
  if (options.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("NcclOptions.device ", options.device, " outside [0, ",
                     count, ") (CUDA devices visible to this process)"));
  }
  if (absl::Status s =
          CudaStatus(cudaSetDevice(options.device), "cudaSetDevice");
      !s.ok()) {
    return s;
  }
  const std::string where =
      absl::StrCat("NCCL rendezvous (rank ", options.rank, " of ", options.size,
                   ", prefix '", options.prefix, "')");
  std::string published;
  // The id file is only needed until init ends; on failure the group is
  // dead anyway, so remove it either way to let (dir, prefix) be reused.
  absl::Cleanup remove_id = [&published] {
    if (!published.empty()) RemoveBlob(published).IgnoreError();
  };
  absl::StatusOr<ncclUniqueId> id =
      ExchangeUniqueId(options, deadline, &published);
  if (!id.ok()) return Annotate(id.status(), where);
  auto comm = std::make_unique<NcclCommunicator>(options);
  if (absl::Status s = comm->Init(*id, deadline); !s.ok()) return s;
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace latentkv::comm
