// `latentkv cluster-credentials` and `latentkv health`, and the cluster
// credential files `serve` makes for its local cluster.
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/auth/cert_authority.h"
#include "common/auth/cluster_secret.h"
#include "common/auth/cluster_tls.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tools/cli/commands.h"

namespace latentkv::cli {

namespace fs = std::filesystem;

absl::StatusOr<ClusterCredentialFiles> WriteClusterCredentials(
    const std::string& dir, absl::Duration validity) {
  if (validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the validity must be positive");
  }
  const fs::path d(dir);
  ClusterCredentialFiles files;
  files.secret_file = (d / "secret").string();
  files.tls = {(d / "tls.crt").string(), (d / "tls.key").string(),
               (d / "ca.crt").string()};
  // Refuse before writing anything: a half-replaced set would mix clusters.
  for (const std::string& p : {files.secret_file, files.tls.cert_file,
                               files.tls.key_file, files.tls.ca_file}) {
    if (fs::exists(p)) {
      return absl::AlreadyExistsError(
          absl::StrCat(p,
                       " exists; credentials are written to new files "
                       "only"));
    }
  }
  // The CA's key stays in memory and is gone when this returns: nothing can
  // issue another member certificate of this cluster.
  auto ca = auth::NewCertAuthority("latentkv cluster CA", validity);
  if (!ca.ok()) return ca.status();
  auto member =
      auth::IssueCert(*ca, "latentkv cluster member", {auth::kClusterTlsName},
                      {"127.0.0.1", "::1"}, validity);
  if (!member.ok()) return member.status();
  if (absl::Status st = auth::WriteNewClusterSecret(files.secret_file);
      !st.ok()) {
    return st;
  }
  for (const auto& [path, text] : {std::pair{files.tls.cert_file, member->cert},
                                   {files.tls.key_file, member->key},
                                   {files.tls.ca_file, ca->cert}}) {
    if (absl::Status st = auth::WritePrivateFile(path, text); !st.ok()) {
      return st;
    }
  }
  return files;
}

int ClusterCredentials(const ClusterCredentialsOptions& o) {
  if (o.out_dir.empty() || o.days < 1) {
    std::fprintf(stderr,
                 "cluster-credentials needs --out DIR and --days >= 1\n");
    return 2;
  }
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) {
    std::fprintf(stderr, "cluster-credentials: %s: %s\n", o.out_dir.c_str(),
                 ec.message().c_str());
    return 1;
  }
  auto files = WriteClusterCredentials(o.out_dir, absl::Hours(24) * o.days);
  if (!files.ok()) {
    std::fprintf(stderr, "cluster-credentials: %s\n",
                 std::string(files.status().message()).c_str());
    return 1;
  }
  std::printf(
      "wrote %s, %s, %s and %s (mode 0600, valid %d days)\n"
      "Kubernetes: kubectl create secret generic latentkv-cluster "
      "--from-file=%s\n",
      files->secret_file.c_str(), files->tls.ca_file.c_str(),
      files->tls.cert_file.c_str(), files->tls.key_file.c_str(), o.days,
      o.out_dir.c_str());
  return 0;
}

int Health(const HealthOptions& o) {
  if (o.server.empty() || o.timeout_s <= 0) {
    std::fprintf(stderr, "health needs --server HOST:PORT and --timeout > 0\n");
    return 2;
  }
  std::shared_ptr<grpc::Channel> channel;
  if (!o.cluster.cert_file.empty() || !o.cluster.key_file.empty() ||
      !o.cluster.ca_file.empty()) {
    // An internal port: present the cluster's member certificate.
    if (absl::Status st = auth::LoadClusterTls(o.cluster, o.cluster_tls_name);
        !st.ok()) {
      std::fprintf(stderr, "health: %s\n", std::string(st.message()).c_str());
      return 2;
    }
    channel = auth::NewInternalChannel(o.server);
  } else {
    auto c = auth::NewClientChannel(o.server, o.tls);
    if (!c.ok()) {
      std::fprintf(stderr, "health: %s\n",
                   std::string(c.status().message()).c_str());
      return 2;
    }
    channel = *std::move(c);
  }
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000.0)));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(o.service);
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status st = stub->Check(&ctx, req, &resp);
  if (!st.ok()) {
    std::fprintf(stderr, "health: %s: %s\n", o.server.c_str(),
                 st.error_message().c_str());
    return 1;
  }
  const std::string status =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
  std::printf("%s\n", status.c_str());
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0
                                                                         : 1;
}

}  // namespace latentkv::cli
