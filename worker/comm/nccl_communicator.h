// A Communicator over NCCL: the GPU backend for tensor-parallel groups (one
// rank per GPU, usually one process per rank, on one or several machines).
// Built only with -DLATENTKV_WITH_CUDA=ON; this header needs no CUDA headers.
//
// Memory: the buffers of AllReduceSum, AllGather and Broadcast are DEVICE
// pointers on this rank's GPU (cudaMalloc'd or managed; anything else is
// INVALID_ARGUMENT, checked before this rank communicates, and leaves the
// communicator usable). BroadcastString
// takes a host std::string and stages it through a device buffer of the
// communicator.
//
// Ordering: a collective first waits for all work queued on this rank's GPU
// by this process (cudaDeviceSynchronize: the model runner's partial sums
// come from the backend's own stream, which this communicator cannot see),
// then runs on the communicator's own non-blocking CUDA stream and returns
// once that stream is idle, so the results are visible to any later work.
// Barrier and BroadcastString touch only the communicator's own buffers and
// skip the device-wide wait.
//
// Rendezvous: rank 0 creates the NCCL unique id and publishes it as a file
// in `rendezvous_dir` (rendezvous_file.h: written to a temp file, renamed
// into place, named after `prefix`); the other ranks poll for it. Rank 0
// removes the file when the communicator's initialization ends, successfully
// (every rank has read the id by then) or not, so a later group may reuse
// (dir, prefix). A rank 0 killed mid-rendezvous leaves the file behind; a
// new group on that (dir, prefix) then fails rather than connecting: rank 0
// gets FAILED_PRECONDITION, the other ranks read the stale id and get
// DEADLINE_EXCEEDED. So give each incarnation a fresh prefix (or clear the
// dir) when restarting after a crash.
//
// Timeouts and errors: initialization (ncclCommInitRankConfig on a
// non-blocking communicator) and each collective are bounded by
// NcclOptions::timeout: the host polls ncclCommGetAsyncError and
// cudaStreamQuery until done, an error or the deadline. On a deadline or an
// error the NCCL communicator is aborted (ncclCommAbort: kernels waiting for
// peers quit) and this Communicator is broken (later calls answer
// UNAVAILABLE, as communicator.h requires). Codes: DEADLINE_EXCEEDED for a
// timeout, UNAVAILABLE for ncclSystemError/ncclRemoteError (a peer or the
// network failed), INTERNAL for other NCCL and CUDA errors (nccl_status.h).
// Nothing throws. NCCL needs no SIGPIPE handling (its sockets use
// MSG_NOSIGNAL).
//
// Shutdown: the destructor finalizes the NCCL communicator (bounded by the
// timeout; a peer that has died or stopped makes it abort instead) and frees
// the stream and the staging buffer.
//
// Thread-safety: as every Communicator (one caller at a time). Calls may come
// from any thread: each selects the communicator's device for its duration
// and restores the caller's current device afterwards.
#ifndef LATENTKV_WORKER_COMM_NCCL_COMMUNICATOR_H_
#define LATENTKV_WORKER_COMM_NCCL_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace latentkv::comm {

struct NcclOptions {
  // This process's rank, in [0, size). Required.
  int rank = 0;
  // Number of ranks in the group, >= 1. With 1 no rendezvous happens (no
  // files) but the result is still an NCCL communicator of one rank, so its
  // buffers are device memory like every other size's. Default 1.
  int size = 1;
  // CUDA device ordinal of this rank's GPU, as numbered in this process
  // (after CUDA_VISIBLE_DEVICES), in [0, device count). Each rank of a group
  // needs its own GPU: NCCL refuses two ranks on one device. The group's
  // compute backend must run on this device. Default 0.
  int device = 0;
  // Directory shared by all ranks of the group for the unique-id file
  // (created if missing). Required (non-empty) when size > 1.
  std::string rendezvous_dir;
  // Group id: the unique-id file is named after it, so several groups (or
  // successive incarnations of one group) can share a directory. All ranks
  // of a group must use the same prefix. Default "".
  std::string prefix;
  // Bound on the rendezvous and initialization (waiting for the other ranks
  // to appear and connect) and on each collective call. Must be > 0.
  // Default 30 s.
  absl::Duration timeout = absl::Seconds(30);
};

// Joins the group described by `options`: blocks until all `size` ranks have
// called it with the same dir and prefix (or `timeout` elapses), then returns
// this rank's communicator (device_memory() is true).
// Errors: INVALID_ARGUMENT for bad options (rank outside [0, size), size < 1,
// empty rendezvous_dir with size > 1, timeout <= 0, a device ordinal outside
// [0, device count), a dir that cannot be created); UNAVAILABLE when no CUDA
// device or driver is usable, or NCCL reports a system/remote error;
// DEADLINE_EXCEEDED when a rank does not show up in time;
// FAILED_PRECONDITION for a stale unique-id file (see above); INTERNAL for
// other NCCL or CUDA errors.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const NcclOptions& options);

}  // namespace latentkv::comm

#endif  // LATENTKV_WORKER_COMM_NCCL_COMMUNICATOR_H_
