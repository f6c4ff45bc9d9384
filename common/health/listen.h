// Start-up shared by every latentkv server process: bind host:port (port 0:
// an ephemeral one) on a configured ServerBuilder and start it.
#ifndef LATENTKV_COMMON_HEALTH_LISTEN_H_
#define LATENTKV_COMMON_HEALTH_LISTEN_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace latentkv {

struct ListeningServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // the bound port (> 0)
};

// Adds an insecure listening port host:port to `builder` (services and
// options already set) and starts it. UNAVAILABLE, naming the address, when
// it cannot listen there.
absl::StatusOr<ListeningServer> ListenAndStart(grpc::ServerBuilder& builder,
                                               const std::string& host,
                                               int port);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_HEALTH_LISTEN_H_
