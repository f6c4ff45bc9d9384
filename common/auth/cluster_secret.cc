// The cluster credential (cluster_secret.h).
#include "common/auth/cluster_secret.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/auth/cert_authority.h"
#include "common/auth/secret_text.h"
#include "common/signals.h"

namespace latentkv::auth {
namespace {

struct Secret {
  bool set = false;
  std::string value;
  Sha256Digest digest{};
};

Secret& Process() {
  static Secret* s = new Secret;
  return *s;
}

}  // namespace

absl::Status LoadClusterSecret(const std::string& file) {
  if (file.empty()) return absl::OkStatus();
  std::ifstream in(file);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the cluster secret file ", file));
  }
  const std::string secret(absl::StripAsciiWhitespace(line));
  if (absl::Status st =
          CheckSecretText(secret, kMinClusterSecretLength,
                          absl::StrCat("the cluster secret in ", file));
      !st.ok()) {
    return st;
  }
  Secret& s = Process();
  s.value = secret;
  s.digest = Sha256(secret);
  s.set = true;
  return absl::OkStatus();
}

bool HasClusterSecret() { return Process().set; }

void AttachClusterSecret(grpc::ClientContext* ctx) {
  const Secret& s = Process();
  if (s.set) ctx->AddMetadata(kClusterSecretMetadata, s.value);
}

grpc::Status CheckClusterSecret(const grpc::ServerContext& ctx) {
  const Secret& s = Process();
  if (!s.set) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  const auto it = md.find(kClusterSecretMetadata);
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "an internal service: the cluster credential is "
                        "missing");
  }
  if (!DigestsEqual(
          Sha256(std::string_view(it->second.data(), it->second.size())),
          s.digest)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "an internal service: wrong cluster credential");
  }
  return grpc::Status::OK;
}

absl::Status WriteNewClusterSecret(const std::string& path) {
  std::array<uint8_t, 32> bytes{};
  const int rnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (rnd < 0 || read(rnd, bytes.data(), bytes.size()) !=
                     static_cast<ssize_t>(bytes.size())) {
    if (rnd >= 0) close(rnd);
    return absl::InternalError("cannot read /dev/urandom");
  }
  close(rnd);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (const uint8_t b : bytes) {
    hex.push_back(kHex[b >> 4]);
    hex.push_back(kHex[b & 15]);
  }
  hex.push_back('\n');
  return WritePrivateFile(path, hex);
}

int SetUpClusterProcess(int exit_with_parent_pid,
                        const std::string& cluster_secret_file) {
  if (exit_with_parent_pid > 0 && !ExitWithParent(exit_with_parent_pid)) {
    std::fprintf(stderr, "the parent process %d is gone: exiting\n",
                 exit_with_parent_pid);
    return 1;
  }
  if (absl::Status st = LoadClusterSecret(cluster_secret_file); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 2;
  }
  return 0;
}

void ClearClusterSecretForTest() { Process() = Secret(); }

}  // namespace latentkv::auth
