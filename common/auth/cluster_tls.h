// Mutual TLS inside a cluster: the coordinator's internal port, the workers
// and the kvstore serve TLS with a certificate of the cluster CA and require
// one from every client; their internal calls present theirs. Together with
// the cluster secret (cluster_secret.h) it makes the internal services
// unusable, and unreadable on the wire, without the cluster's credentials.
//
// Process-wide, like the secret: main() loads it once (--cluster_ca_file,
// --cluster_cert_file, --cluster_key_file; cluster_flags.h) before any
// server or client starts. Without it, internal listeners and channels are
// plaintext. Internal clients check the server's certificate against the
// cluster CA and, by default, the name "latentkv-cluster" (kClusterTlsName)
// instead of the dialed host: the CA is private to the cluster, so any
// certificate it signed is a member, wherever it runs (pod IPs change).
// `latentkv serve` makes a throwaway CA and one member certificate
// (cert_authority.h) for its local cluster.
// Thread-safety: Load* before threads start; the rest is read-only.
#ifndef LATENTKV_COMMON_AUTH_CLUSTER_TLS_H_
#define LATENTKV_COMMON_AUTH_CLUSTER_TLS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/auth/tls.h"
#include "grpcpp/grpcpp.h"

namespace latentkv::auth {

inline constexpr char kClusterTlsName[] = "latentkv-cluster";

// Loads the cluster's CA, certificate and key (all three, or none: all
// empty is plaintext). `server_name`: the name internal clients expect in
// servers' certificates ("" : the dialed host). InvalidArgument naming the
// file for anything LoadTlsFiles refuses.
absl::Status LoadClusterTls(const TlsFiles& files,
                            const std::string& server_name);
bool HasClusterTls();

// What internal listeners use: mutual TLS when loaded, else insecure.
std::shared_ptr<grpc::ServerCredentials> InternalServerCredentials();
// Keepalive ping period (and ping timeout) of internal channels: a call to
// a peer cut off by a partition fails UNAVAILABLE within ~2x this.
// Servers accept pings this often (common/health/listen.h).
inline constexpr int kInternalKeepaliveMs = 3000;

// A channel to an internal service at `address` (cluster TLS when loaded),
// with keepalive pings every kInternalKeepaliveMs.
std::shared_ptr<grpc::Channel> NewInternalChannel(
    const std::string& address,
    grpc::ChannelArguments args = grpc::ChannelArguments());

// Forgets the process's cluster TLS (tests only).
void ClearClusterTlsForTest();

}  // namespace latentkv::auth

#endif  // LATENTKV_COMMON_AUTH_CLUSTER_TLS_H_
