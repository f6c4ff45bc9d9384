// Start-up shared by every latentkv server process: bind host:port (port 0:
// an ephemeral one) on a configured ServerBuilder and start it.
// SO_REUSEPORT is off: with it, gRPC clones each listener per poller, and
// for port 0 every clone bound a different ephemeral port, a second
// unadvertised port serving the same services; it would also let another
// process of the same user bind the port and take a share of connections.
#ifndef LATENTKV_COMMON_HEALTH_LISTEN_H_
#define LATENTKV_COMMON_HEALTH_LISTEN_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace latentkv {

struct ListeningServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // the bound port (> 0)
};

// Adds one listening port host:port with `credentials` (TLS or insecure;
// common/auth/cluster_tls.h for internal ports) to `builder` (services and
// options already set) and starts it. UNAVAILABLE, naming the address, when
// it cannot listen there.
absl::StatusOr<ListeningServer> ListenAndStart(
    grpc::ServerBuilder& builder, const std::string& host, int port,
    std::shared_ptr<grpc::ServerCredentials> credentials);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_HEALTH_LISTEN_H_
