// A Communicator over Gloo's TCP transport: the CPU backend for
// tensor-parallel groups (one process per rank, on one or several machines).
//
// Rendezvous: every rank writes its listening addresses into a
// gloo::rendezvous::FileStore (a directory every rank can see, e.g. a local
// temp dir, or a shared file system across machines) under `prefix`, reads
// everyone else's and connects a full mesh of TCP pairs. When the rendezvous
// ends (successfully or not) each rank removes the key file it wrote, so a
// later group may reuse the same (dir, prefix). A rank killed mid-rendezvous
// leaves its file behind; a new group using that (dir, prefix) then fails
// rather than connecting: the rank whose key is taken gets
// FAILED_PRECONDITION, the others an error when the stale address refuses
// them or the timeout passes. So give each incarnation a fresh prefix (or
// clear the dir) when restarting after a crash.
//
// Collectives: gloo::allreduce (ring), gloo::allgather (ring),
// gloo::broadcast (binomial tree), gloo::barrier, each bounded by
// GlooOptions::timeout. Gloo's exceptions never escape: they become
// DEADLINE_EXCEEDED (a timeout), UNAVAILABLE (a connection error, e.g. a peer
// process died) or INTERNAL (a violated Gloo precondition, e.g. mismatched
// sizes between ranks); the communicator is broken after any of them.
//
// Process-wide side effect: Gloo writes to sockets with writev(2), which
// raises SIGPIPE when a peer has died. The first CreateGlooCommunicator call
// sets SIGPIPE to SIG_IGN if its disposition is still SIG_DFL (as gRPC does),
// so a dead peer is an error value instead of killing this process.
#ifndef LATENTKV_WORKER_COMM_GLOO_COMMUNICATOR_H_
#define LATENTKV_WORKER_COMM_GLOO_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace latentkv::comm {

struct GlooOptions {
  // This process's rank, in [0, size). Required.
  int rank = 0;
  // Number of ranks in the group, >= 1. With 1 no rendezvous happens and the
  // single-rank communicator is returned. Default 1.
  int size = 1;
  // Directory of the gloo::rendezvous::FileStore, shared by all ranks of the
  // group (created if missing). Required (non-empty) when size > 1.
  std::string rendezvous_dir;
  // Group id: keys are namespaced by it, so several groups (or successive
  // incarnations of one group) can share a directory. All ranks of a group
  // must use the same prefix. Default "" (no isolation).
  std::string prefix;
  // Address of the interface the TCP transport listens on (peers connect to
  // it; each pair gets an ephemeral port). Default loopback; use the
  // machine's address for groups spanning machines.
  std::string host = "127.0.0.1";
  // Bound on the rendezvous (waiting for the other ranks to appear and
  // connecting to them) and on each collective call. Must be > 0.
  // Default 30 s.
  absl::Duration timeout = absl::Seconds(30);
};

// Joins the group described by `options`: blocks until all `size` ranks have
// called it with the same dir and prefix (or `timeout` elapses), then returns
// this rank's communicator.
// Errors: INVALID_ARGUMENT for bad options (rank outside [0, size), size < 1,
// empty rendezvous_dir with size > 1, timeout <= 0, a dir that cannot be
// created, an unusable host); DEADLINE_EXCEEDED when a rank does not show up
// in time; FAILED_PRECONDITION for a stale key file (see above);
// UNAVAILABLE/INTERNAL when connecting fails.
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const GlooOptions& options);

}  // namespace latentkv::comm

#endif  // LATENTKV_WORKER_COMM_GLOO_COMMUNICATOR_H_
