#include "common/health/listen.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpc/grpc.h"
#include "grpcpp/security/server_credentials.h"

namespace latentkv {

absl::StatusOr<ListeningServer> ListenAndStart(
    grpc::ServerBuilder& builder, const std::string& host, int port,
    std::shared_ptr<grpc::ServerCredentials> credentials) {
  ListeningServer out;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Internal clients ping every 3 s, also during long silent calls
  // (common/auth/cluster_tls.h); accept that instead of answering
  // "too_many_pings" and closing the connection.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddListeningPort(absl::StrCat(host, ":", port),
                           std::move(credentials), &out.port);
  out.server = builder.BuildAndStart();
  if (!out.server || out.port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", host, ":", port));
  }
  return out;
}

}  // namespace latentkv
