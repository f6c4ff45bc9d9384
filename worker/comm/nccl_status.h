// NCCL results as absl::Status: the error model of the NCCL communicator,
// on plain ints so it builds (and is tested) without CUDA or NCCL headers.
// nccl_communicator.cc checks at compile time that the constants below are
// nccl.h's ncclResult_t values.
//
// Thread-safety: pure functions.
#ifndef LATENTKV_WORKER_COMM_NCCL_STATUS_H_
#define LATENTKV_WORKER_COMM_NCCL_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace latentkv::comm {

// ncclResult_t (nccl.h, NCCL 2.x).
inline constexpr int kNcclSuccess = 0;
inline constexpr int kNcclUnhandledCudaError = 1;
inline constexpr int kNcclSystemError = 2;
inline constexpr int kNcclInternalError = 3;
inline constexpr int kNcclInvalidArgument = 4;
inline constexpr int kNcclInvalidUsage = 5;
inline constexpr int kNcclRemoteError = 6;
inline constexpr int kNcclInProgress = 7;

// The enumerator's name ("ncclRemoteError"), or "ncclResult <n>" for a value
// this build does not know.
std::string NcclResultName(int result);

// The status of NCCL operation `what` that produced `result`:
// - ncclSuccess: OK;
// - ncclSystemError, ncclRemoteError: UNAVAILABLE (a peer process died, or
//   the network or a system call failed: the group is lost, not this code);
// - every other value (including ncclInProgress, which callers must wait on
//   instead of mapping): INTERNAL.
// The message reads "<what>: <name>" followed by ": <detail>" when `detail`
// (typically ncclGetLastError's text) is not empty. Timeouts are not NCCL
// results: the waits that enforce them answer DEADLINE_EXCEEDED.
absl::Status NcclResultToStatus(int result, absl::string_view what,
                                absl::string_view detail = {});

}  // namespace latentkv::comm

#endif  // LATENTKV_WORKER_COMM_NCCL_STATUS_H_
