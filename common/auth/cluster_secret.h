// The cluster credential: a secret shared by the coordinator, the workers
// and the kvstore of one cluster, required by their internal services
// (Control on the coordinator, Worker, KvStore) so that nobody else can
// register a worker, call a worker directly, or read and write the KV
// store. Every internal call carries it as gRPC metadata
// "x-latentkv-cluster-secret"; servers compare SHA-256 digests.
//
// It is process-wide: main() loads it once (--cluster_secret_file) before
// any server or client starts, after which it is read-only. Without one,
// the internal services are open (a single trusted host, tests) and calls
// carry nothing. `latentkv serve` writes a fresh random secret (mode 0600)
// for its local cluster.
// Thread-safety: Set* before threads start; the rest is read-only.
#ifndef LATENTKV_COMMON_AUTH_CLUSTER_SECRET_H_
#define LATENTKV_COMMON_AUTH_CLUSTER_SECRET_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace latentkv::auth {

inline constexpr char kClusterSecretMetadata[] = "x-latentkv-cluster-secret";
// Shortest secret accepted: 32 characters (serve writes 64 hex digits).
inline constexpr size_t kMinClusterSecretLength = 32;

// Loads the process's secret from the first line of `file` ("" : none).
// InvalidArgument for an unreadable file or a secret under 32 characters or
// with whitespace/control characters (the message never contains it).
absl::Status LoadClusterSecret(const std::string& file);
bool HasClusterSecret();

// Adds the secret to an outgoing internal call (nothing without one).
void AttachClusterSecret(grpc::ClientContext* ctx);

// OK without a secret, or when `ctx` carries it; else UNAUTHENTICATED.
grpc::Status CheckClusterSecret(const grpc::ServerContext& ctx);

// Writes 32 random bytes as 64 hex digits to `path` with mode 0600 (from
// /dev/urandom); the file must not exist.
absl::Status WriteNewClusterSecret(const std::string& path);

// The start of every cluster server main (coordinator, worker, kvstore):
// follows the parent's death when `exit_with_parent_pid` > 0
// (common/signals.h ExitWithParent), then loads the secret. The exit code
// main should return (1: the parent is gone, 2: a bad secret file, with a
// message on stderr), or 0 to go on.
int SetUpClusterProcess(int exit_with_parent_pid,
                        const std::string& cluster_secret_file);

// Forgets the process's secret (tests only).
void ClearClusterSecretForTest();

}  // namespace latentkv::auth

#endif  // LATENTKV_COMMON_AUTH_CLUSTER_SECRET_H_
