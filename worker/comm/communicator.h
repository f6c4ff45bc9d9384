// Collectives for a tensor-parallel worker group: the seam between the model
// runner and a collective engine (Gloo over TCP on CPU, see
// gloo_communicator.h; NCCL on CUDA GPUs, see nccl_communicator.h).
//
// A group has `size()` ranks 0..size-1, one Communicator per rank (usually one
// per process). Ranks run the same step in lock-step and meet in these calls.
//
// Contract shared by every implementation:
// - Every rank makes the SAME calls, in the SAME order, with the same sizes
//   (`n`, `bytes`) and the same `root`. A mismatch is a programming error
//   whose result is unspecified (typically an error or a timeout).
// - The buffers of AllReduceSum, AllGather and Broadcast are in the memory of
//   the backend the group computes on: host for Gloo, device for NCCL (see
//   device_memory()). BroadcastString's std::string is host memory for
//   every implementation. Buffers must stay valid for the duration of the
//   call and must not be touched by other threads (or other device streams)
//   meanwhile; on return the results are in place, visible to later host
//   reads or device work.
// - Every call returns absl::Status and never throws. A dead, missing or
//   stalled peer yields UNAVAILABLE (connection lost) or DEADLINE_EXCEEDED
//   (no progress within the configured timeout) instead of hanging. After any
//   failed call the communicator is broken: later calls fail fast with
//   UNAVAILABLE, and the group must be rebuilt (a new Communicator per rank,
//   with a fresh rendezvous).
// - Results are identical (bitwise) on all ranks.
//
// Thread-safety: not thread-safe. One caller at a time per Communicator (calls
// may come from different threads if externally serialized). Different
// Communicator objects are independent.
#ifndef LATENTKV_WORKER_COMM_COMMUNICATOR_H_
#define LATENTKV_WORKER_COMM_COMMUNICATOR_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace latentkv::comm {

class Communicator {
 public:
  virtual ~Communicator() = default;

  // This process's rank in [0, size()).
  virtual int rank() const = 0;
  // Number of ranks in the group (>= 1).
  virtual int size() const = 0;
  // True when the float/byte buffers of the collectives are device memory
  // (NCCL), false when they are host memory (Gloo, the single-rank
  // communicator). A group must compute on a backend whose buffers are of
  // the same kind (kernels::Backend::host_addressable() == !device_memory()).
  virtual bool device_memory() const { return false; }

  // In place: data[i] = sum over ranks of data[i], for i in [0, n).
  // data: [n] f32. The summation order is implementation-defined (not the
  // rank order), so results may differ from a sequential sum by float
  // rounding, but every rank receives the same bits. n == 0 is a no-op.
  virtual absl::Status AllReduceSum(float* data, size_t n) = 0;

  // out[r * n + i] = in_r[i] for every rank r (rank-major).
  // in: [n] f32 on every rank; out: [size() * n] f32. `in` may alias
  // out + rank() * n (in-place); no other overlap is allowed. n == 0 is a
  // no-op.
  virtual absl::Status AllGather(const float* in, size_t n, float* out) = 0;

  // Copies `bytes` bytes at `data` on rank `root` to `data` on every rank.
  // root in [0, size()) (else INVALID_ARGUMENT). bytes == 0 is a no-op.
  virtual absl::Status Broadcast(void* data, size_t bytes, int root) = 0;

  // Variable-length broadcast: on return *bytes on every rank equals *bytes
  // on `root` (non-roots' previous contents are replaced). Implemented as a
  // broadcast of root's length (8 bytes) followed by the payload, so it costs
  // two collectives (one when the string is empty).
  // The default implementation uses Broadcast().
  virtual absl::Status BroadcastString(std::string* bytes, int root);

  // Variable-length gather of host strings to `root`: on return, on root,
  // all->size() == size() and (*all)[r] is rank r's `mine`; `all` is
  // cleared on the other ranks. The default implementation is size()
  // BroadcastString calls (every rank receives every string); Gloo
  // overrides it with point-to-point sends to root.
  virtual absl::Status GatherStrings(const std::string& mine, int root,
                                     std::vector<std::string>* all);

  // Variable-length scatter of host strings from `root`: on return *mine on
  // rank r is root's parts[r] (root's `parts` holds size() strings; other
  // ranks' `parts` is ignored). INVALID_ARGUMENT on root when parts has the
  // wrong size (before any communication: the other ranks then wait until
  // the timeout). Default: size() - 1 BroadcastString calls; Gloo: sends.
  virtual absl::Status ScatterStrings(const std::vector<std::string>& parts,
                                      int root, std::string* mine);

  // Returns once every rank has entered Barrier().
  virtual absl::Status Barrier() = 0;

 protected:
  // INVALID_ARGUMENT "<op>: root R outside [0, size)" unless root is a rank:
  // the argument check of every rooted collective, here and in the
  // implementations.
  absl::Status CheckRoot(absl::string_view op, int root) const;
  // CheckRoot, then on root: INVALID_ARGUMENT unless `parts` holds one
  // string per rank (ScatterStrings' arguments).
  absl::Status CheckScatterParts(const std::vector<std::string>& parts,
                                 int root) const;
};

// The communicator of a group of one: rank 0, size 1. AllReduceSum, Barrier
// and Broadcast are no-ops, AllGather copies `in` to `out`. Used when the
// tensor-parallel degree is 1.
std::unique_ptr<Communicator> CreateSingleRankCommunicator();

}  // namespace latentkv::comm

#endif  // LATENTKV_WORKER_COMM_COMMUNICATOR_H_
