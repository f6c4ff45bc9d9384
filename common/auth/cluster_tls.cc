// Mutual TLS inside a cluster (cluster_tls.h).
#include "common/auth/cluster_tls.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "grpc/grpc.h"

namespace latentkv::auth {
namespace {

struct ClusterTls {
  bool set = false;
  TlsPem pem;
  std::string server_name;
};

ClusterTls& Process() {
  static ClusterTls* s = new ClusterTls;
  return *s;
}

}  // namespace

absl::Status LoadClusterTls(const TlsFiles& files,
                            const std::string& server_name) {
  if (files.cert_file.empty() && files.key_file.empty() &&
      files.ca_file.empty()) {
    return absl::OkStatus();
  }
  auto pem = LoadTlsFiles(files, /*need_cert=*/true, /*need_ca=*/true);
  if (!pem.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster TLS: ", pem.status().message()));
  }
  ClusterTls& s = Process();
  s.pem = std::move(*pem);
  s.server_name = server_name;
  s.set = true;
  return absl::OkStatus();
}

bool HasClusterTls() { return Process().set; }

std::shared_ptr<grpc::ServerCredentials> InternalServerCredentials() {
  const ClusterTls& s = Process();
  if (!s.set) return grpc::InsecureServerCredentials();
  return TlsServerCredentials(s.pem, /*require_client_cert=*/true);
}

std::shared_ptr<grpc::Channel> NewInternalChannel(const std::string& address,
                                                  grpc::ChannelArguments args) {
  // A peer behind a partition sends no RST: without pings a stream to it
  // would wait for TCP's retransmission timeout (~15 min). Pings every
  // kKeepaliveMs, also while a long prefill sends no data, fail the call
  // UNAVAILABLE within two periods (the coordinator then retries elsewhere).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kInternalKeepaliveMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kInternalKeepaliveMs);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  const ClusterTls& s = Process();
  if (!s.set) {
    return grpc::CreateCustomChannel(address,
                                     grpc::InsecureChannelCredentials(), args);
  }
  if (!s.server_name.empty()) args.SetSslTargetNameOverride(s.server_name);
  return grpc::CreateCustomChannel(address, TlsChannelCredentials(s.pem), args);
}

void ClearClusterTlsForTest() { Process() = ClusterTls(); }

}  // namespace latentkv::auth
