// TLS material, the throwaway CA and cluster mutual TLS, checked against
// OpenSSL's own verifier and against real gRPC servers on loopback.
#include "common/auth/tls.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "common/auth/cert_authority.h"
#include "common/auth/cluster_tls.h"
#include "common/health/listen.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace latentkv::auth {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

X509* ParseCert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return cert;
}

// OpenSSL's verdict on `leaf` under `ca` for TLS server use.
int Verify(const std::string& ca, const std::string& leaf) {
  X509* ca_cert = ParseCert(ca);
  X509* leaf_cert = ParseCert(leaf);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca_cert);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf_cert, nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  const int ok = X509_verify_cert(ctx);
  const int err = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(ca_cert);
  X509_free(leaf_cert);
  return err;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/latentkv-tls-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    ClearClusterTlsForTest();
    fs::remove_all(dir_);
  }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    EXPECT_TRUE(WritePrivateFile(path, text).ok());
    return path;
  }
  // CA + member certificate files under `prefix`.
  TlsFiles Member(const std::string& prefix, const PemPair& ca) {
    auto m = IssueCert(ca, "member", {kClusterTlsName}, {"127.0.0.1"},
                       absl::Hours(1));
    EXPECT_TRUE(m.ok());
    return {Write(prefix + ".pem", m->cert), Write(prefix + "-key.pem", m->key),
            Write(prefix + "-ca.pem", ca.cert)};
  }
  std::string dir_;
};

TEST_F(TlsTest, IssuedCertificatesVerifyUnderTheirCaOnly) {
  auto ca = NewCertAuthority("test CA", absl::Hours(1));
  auto other = NewCertAuthority("other CA", absl::Hours(1));
  ASSERT_TRUE(ca.ok() && other.ok());
  auto leaf = IssueCert(*ca, "member", {"latentkv-cluster", "localhost"},
                        {"127.0.0.1", "::1"}, absl::Hours(1));
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  EXPECT_EQ(Verify(ca->cert, leaf->cert), X509_V_OK);
  EXPECT_NE(Verify(other->cert, leaf->cert), X509_V_OK);
  // The names are in subjectAltName, as OpenSSL's matchers read them.
  X509* cert = ParseCert(leaf->cert);
  EXPECT_EQ(X509_check_host(cert, "latentkv-cluster", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert, "localhost", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(cert, "example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert, "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert, "::1", 0), 1);
  EXPECT_NE(X509_check_ip_asc(cert, "10.0.0.1", 0), 1);
  // A leaf cannot sign: it is not a CA.
  EXPECT_EQ(X509_check_ca(cert), 0);
  X509_free(cert);
  X509* ca_cert = ParseCert(ca->cert);
  EXPECT_NE(X509_check_ca(ca_cert), 0);
  X509_free(ca_cert);
  EXPECT_THAT(CertDnsNames(leaf->cert),
              ::testing::ElementsAre("latentkv-cluster", "localhost"));
  EXPECT_FALSE(IssueCert(*ca, "x", {}, {}, absl::Hours(1)).ok());
  EXPECT_FALSE(IssueCert(*ca, "x", {}, {"not-an-ip"}, absl::Hours(1)).ok());
  EXPECT_FALSE(NewCertAuthority("x", absl::ZeroDuration()).ok());
}

TEST_F(TlsTest, LoadTlsFilesRefusesWhatWouldFailTheHandshake) {
  auto ca = NewCertAuthority("test CA", absl::Hours(1));
  ASSERT_TRUE(ca.ok());
  const TlsFiles good = Member("good", *ca);
  auto pem = LoadTlsFiles(good, true, true);
  ASSERT_TRUE(pem.ok()) << pem.status();
  EXPECT_THAT(pem->cert_chain, HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_THAT(pem->ca, HasSubstr("BEGIN CERTIFICATE"));

  // Another certificate's key.
  const TlsFiles other = Member("other", *ca);
  auto mismatched =
      LoadTlsFiles({good.cert_file, other.key_file, ""}, true, false);
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatched.status().message(),
              HasSubstr("is not the private key of"));
  // Not PEM, missing, half given, required but absent.
  const std::string junk = Write("junk.pem", "hello\n");
  EXPECT_THAT(
      LoadTlsFiles({junk, good.key_file, ""}, true, false).status().message(),
      HasSubstr("junk.pem: no PEM certificate"));
  EXPECT_THAT(LoadTlsFiles({"", "", junk}, false, true).status().message(),
              HasSubstr("no PEM CA certificate"));
  EXPECT_THAT(
      LoadTlsFiles({dir_ + "/absent.pem", good.key_file, ""}, true, false)
          .status()
          .message(),
      HasSubstr("cannot read"));
  EXPECT_FALSE(LoadTlsFiles({good.cert_file, "", ""}, false, false).ok());
  EXPECT_FALSE(LoadTlsFiles({}, true, false).ok());
  EXPECT_FALSE(LoadTlsFiles({}, false, true).ok());
  EXPECT_TRUE(LoadTlsFiles({}, false, false).ok());

  // An expired certificate (valid for one second, an hour back included).
  auto brief = IssueCert(*ca, "brief", {"x"}, {}, absl::Seconds(1));
  ASSERT_TRUE(brief.ok());
  const std::string cert = Write("brief.pem", brief->cert);
  const std::string key = Write("brief-key.pem", brief->key);
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  EXPECT_THAT(LoadTlsFiles({cert, key, ""}, true, false).status().message(),
              HasSubstr("has expired"));
  EXPECT_FALSE(LoadClusterTls({cert, key, good.ca_file}, kClusterTlsName).ok());
  EXPECT_FALSE(HasClusterTls());
}

// Answers every health check SERVING.
class Serving final : public grpc::health::v1::Health::Service {
  grpc::Status Check(grpc::ServerContext*,
                     const grpc::health::v1::HealthCheckRequest*,
                     grpc::health::v1::HealthCheckResponse* resp) override {
    resp->set_status(grpc::health::v1::HealthCheckResponse::SERVING);
    return grpc::Status::OK;
  }
};

// A health-only gRPC server with `credentials`.
struct HealthServer {
  explicit HealthServer(std::shared_ptr<grpc::ServerCredentials> credentials =
                            InternalServerCredentials()) {
    grpc::ServerBuilder b;
    b.RegisterService(&service);
    auto l = ListenAndStart(b, "127.0.0.1", 0, std::move(credentials));
    EXPECT_TRUE(l.ok());
    server = std::move(l->server);
    address = "127.0.0.1:" + std::to_string(l->port);
  }
  ~HealthServer() { server->Shutdown(std::chrono::system_clock::now()); }
  Serving service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

grpc::StatusCode Check(std::shared_ptr<grpc::Channel> channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  return stub->Check(&ctx, req, &resp).error_code();
}

std::shared_ptr<grpc::Channel> Tls(const std::string& address,
                                   const TlsFiles& files,
                                   const std::string& name) {
  auto pem = LoadTlsFiles(files, false, false);
  EXPECT_TRUE(pem.ok()) << pem.status();
  grpc::ChannelArguments args;
  if (!name.empty()) args.SetSslTargetNameOverride(name);
  return grpc::CreateCustomChannel(address, TlsChannelCredentials(*pem), args);
}

TEST_F(TlsTest, ClusterMutualTlsAdmitsMembersOnly) {
  auto ca = NewCertAuthority("cluster CA", absl::Hours(1));
  auto rogue_ca = NewCertAuthority("rogue CA", absl::Hours(1));
  ASSERT_TRUE(ca.ok() && rogue_ca.ok());
  const TlsFiles member = Member("member", *ca);
  const TlsFiles rogue = Member("rogue", *rogue_ca);
  ASSERT_TRUE(LoadClusterTls(member, kClusterTlsName).ok());
  ASSERT_TRUE(HasClusterTls());
  HealthServer server;

  // A member gets in.
  EXPECT_EQ(Check(NewInternalChannel(server.address)), grpc::StatusCode::OK);
  // Plaintext, TLS without a client certificate, or a certificate of
  // another CA: no handshake, no call.
  EXPECT_EQ(Check(grpc::CreateChannel(server.address,
                                      grpc::InsecureChannelCredentials())),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(
      Check(Tls(server.address, {"", "", member.ca_file}, kClusterTlsName)),
      grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Check(Tls(server.address,
                      {rogue.cert_file, rogue.key_file, member.ca_file},
                      kClusterTlsName)),
            grpc::StatusCode::UNAVAILABLE);
  // The client checks the server too: another CA, or another name.
  EXPECT_EQ(Check(Tls(server.address,
                      {member.cert_file, member.key_file, rogue.ca_file},
                      kClusterTlsName)),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Check(Tls(server.address, member, "someone-else")),
            grpc::StatusCode::UNAVAILABLE);
  // The dialed IP is in the certificate too.
  EXPECT_EQ(Check(Tls(server.address, member, "")), grpc::StatusCode::OK);
}

TEST_F(TlsTest, PublicTlsNeedsNoClientCertificate) {
  auto ca = NewCertAuthority("public CA", absl::Hours(1));
  ASSERT_TRUE(ca.ok());
  const TlsFiles files = Member("public", *ca);
  auto pem = LoadTlsFiles({files.cert_file, files.key_file, ""}, true, false);
  ASSERT_TRUE(pem.ok());
  HealthServer server(TlsServerCredentials(*pem, false));
  const std::string& address = server.address;
  ClientTls tls{true, files.ca_file, kClusterTlsName};
  auto channel = NewClientChannel(address, tls);
  ASSERT_TRUE(channel.ok());
  EXPECT_EQ(Check(*channel), grpc::StatusCode::OK);
  // Plaintext to a TLS port fails; so does trusting the system CAs only.
  auto plain = NewClientChannel(address, ClientTls{});
  EXPECT_EQ(Check(*plain), grpc::StatusCode::UNAVAILABLE);
  auto system = NewClientChannel(address, ClientTls{true, "", ""});
  EXPECT_EQ(Check(*system), grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(
      NewClientChannel(address, ClientTls{true, dir_ + "/none.pem", ""}).ok());
}

}  // namespace
}  // namespace latentkv::auth
