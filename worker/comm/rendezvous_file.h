// A small blob (e.g. the 128-byte NCCL unique id) handed from one rank to
// the others through a file in a directory they all see (a local temp dir,
// or a shared file system across machines). Plain C++, no device.
//
// Atomicity: PublishBlob writes a temporary file beside the target, flushes
// it to disk and rename(2)s it into place, so a reader sees either no file or
// the whole blob, never a partial write. Readers ignore the temporary files.
//
// Staleness: publishing refuses a target that already exists, since it is
// left over from an earlier group with the same (dir, key) (e.g. a crashed
// incarnation). A reader cannot tell such a file from a fresh one; whoever
// publishes should remove the file once every reader has read it (see
// RemoveBlob), and a restarted group should use a fresh name or clear the
// directory.
//
// Thread-safety: the functions are reentrant; concurrent publishers of one
// path are not supported (one of them fails or both succeed, last wins).
#ifndef LATENTKV_WORKER_COMM_RENDEZVOUS_FILE_H_
#define LATENTKV_WORKER_COMM_RENDEZVOUS_FILE_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/comm/poll_until.h"

namespace latentkv::comm {

// The file of `key` for the group `prefix` in `dir`:
// "<dir>/latentkv.<prefix>.<key>" with every character of prefix and key
// outside [A-Za-z0-9_-] written as %XX, so any prefix names one file of
// `dir` and different (prefix, key) pairs name different files.
std::string RendezvousPath(absl::string_view dir, absl::string_view prefix,
                           absl::string_view key);

// Writes `blob` to `path` atomically (see the file comment); the file is
// readable by everyone (mode 0644). Errors: FAILED_PRECONDITION when `path`
// already exists (stale); the errno-derived status (e.g. NOT_FOUND for a
// missing directory, PERMISSION_DENIED) when writing fails, in which case no
// file is left behind.
absl::Status PublishBlob(const std::string& path, absl::string_view blob);

// Waits until `path` exists (polling per `poll`), then returns its contents,
// which must be exactly `size` bytes. Errors: DEADLINE_EXCEEDED when the
// file is still absent at `deadline`; FAILED_PRECONDITION when it has
// another size (not written by PublishBlob for this blob); the
// errno-derived status when it cannot be read.
absl::StatusOr<std::string> ReadBlob(const std::string& path, size_t size,
                                     absl::Time deadline,
                                     const PollOptions& poll);

// Removes `path`; OK when it does not exist.
absl::Status RemoveBlob(const std::string& path);

}  // namespace latentkv::comm

#endif  // LATENTKV_WORKER_COMM_RENDEZVOUS_FILE_H_
