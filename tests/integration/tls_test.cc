// TLS end to end through `latentkv serve`: the public gRPC and HTTP ports
// speak TLS with --tls-cert/--tls-key (and nothing else), every internal
// port (the coordinator's Control port, the worker, the kvstore) takes only
// clients holding a certificate of the cluster's throwaway CA, every process
// listens on exactly the ports it advertises, and the kvstore's layout,
// fixed by serve at start, is the one the workers publish with.
#include "common/auth/tls.h"

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/auth/cert_authority.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "latentkv/v1/worker.grpc.pb.h"
#include "tests/integration/metrics_scrape.h"
#include "tests/integration/process.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

// Inodes of the listening TCP sockets of the machine, with their ports.
std::map<std::string, int> ListeningInodes() {
  std::map<std::string, int> out;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::vector<std::string> f =
          absl::StrSplit(line, ' ', absl::SkipWhitespace());
      if (f.size() < 10 || f[3] != "0A") continue;  // 0A: LISTEN
      const std::string local = f[1];
      int port = 0;
      absl::SimpleHexAtoi(local.substr(local.rfind(':') + 1), &port);
      out[f[9]] = port;
    }
  }
  return out;
}

// The ports process `pid` listens on.
std::set<int> ListeningPorts(pid_t pid) {
  const std::map<std::string, int> inodes = ListeningInodes();
  std::set<int> ports;
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(fd_dir.c_str());
  if (d == nullptr) return ports;
  while (dirent* e = readdir(d)) {
    char target[256];
    const ssize_t n = readlink((fd_dir + "/" + e->d_name).c_str(), target,
                               sizeof(target) - 1);
    if (n <= 0) continue;
    const std::string t(target, n);
    if (!absl::StartsWith(t, "socket:[")) continue;
    const auto it = inodes.find(t.substr(8, t.size() - 9));
    if (it != inodes.end()) ports.insert(it->second);
  }
  closedir(d);
  return ports;
}

// Children of `pid` whose command name starts with `prefix`.
std::vector<ChildProcess> ChildrenNamed(pid_t pid, const std::string& prefix) {
  std::vector<ChildProcess> out;
  for (ChildProcess& c : ChildrenOf(pid)) {
    if (absl::StartsWith(c.comm, prefix)) out.push_back(std::move(c));
  }
  return out;
}

std::string Flag(const ChildProcess& c, const std::string& name) {
  for (const std::string& a : c.args) {
    if (absl::StartsWith(a, "--" + name + "=")) {
      return a.substr(name.size() + 3);
    }
  }
  return "";
}

grpc::StatusCode HealthCheck(std::shared_ptr<grpc::Channel> channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckResponse resp;
  return stub->Check(&ctx, {}, &resp).error_code();
}

class ServeTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = auth::NewCertAuthority("test public CA", absl::Hours(1));
    ASSERT_TRUE(ca.ok());
    auto leaf = auth::IssueCert(*ca, "latentkv test", {"localhost"},
                                {"127.0.0.1"}, absl::Hours(1));
    ASSERT_TRUE(leaf.ok());
    ca_ = dir_ + "/ca.pem";
    ASSERT_TRUE(auth::WritePrivateFile(ca_, ca->cert).ok());
    ASSERT_TRUE(auth::WritePrivateFile(dir_ + "/tls.pem", leaf->cert).ok());
    ASSERT_TRUE(auth::WritePrivateFile(dir_ + "/tls-key.pem", leaf->key).ok());
    http_port_ = PickFreePort();
    metrics_port_ = PickFreePort();
    while (!PortBindable(metrics_port_ + 1) ||
           !PortBindable(metrics_port_ + 2)) {
      metrics_port_ = PickFreePort();
    }
    serve_ = std::make_unique<Process>(
        std::vector<std::string>{
            BinDir() + "/latentkv", "serve", "--model=" + Stories260kDir(),
            "--port=0", "--port-file=" + dir_ + "/addr", "--kvstore",
            "--http-port=" + std::to_string(http_port_),
            "--metrics-port=" + std::to_string(metrics_port_),
            "--tls-cert=" + dir_ + "/tls.pem",
            "--tls-key=" + dir_ + "/tls-key.pem", "--tls-ca=" + ca_},
        dir_ + "/serve.log");
    addr_ = WaitForLine(dir_ + "/addr", 90);
    ASSERT_FALSE(addr_.empty()) << Log();
  }
  void TearDown() override {
    if (serve_) EXPECT_EQ(serve_->Stop(SIGINT, 40), 0) << Log();
  }
  std::string Log() const {
    std::ifstream in(dir_ + "/serve.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // curl over HTTPS (or plain HTTP) to the HTTP port: the status code, or
  // 0 when no HTTP answer came.
  int Curl(const std::string& scheme, const std::string& path) {
    int code = -1;
    const std::string out = RunCommand(
        {"curl", "-sS", "--max-time", "20", "--cacert", ca_, "-o", "/dev/null",
         "-w", "%{http_code}",
         scheme + "://127.0.0.1:" + std::to_string(http_port_) + path},
        &code);
    int status = 0;
    return absl::SimpleAtoi(out, &status) ? status : 0;
  }

  std::string dir_ = MakeTempDir();
  std::string ca_, addr_;
  int http_port_ = 0, metrics_port_ = 0;
  std::unique_ptr<Process> serve_;
};

TEST_F(ServeTlsTest, PublicPortsAreTlsAndInternalPortsWantClusterMembers) {
  // gRPC: with the CA, a completion; in plaintext, nothing.
  int code = -1;
  std::string out = RunCommand(
      {BinDir() + "/latentkv", "generate", "--server=" + addr_,
       "--tls-ca=" + ca_, "--prompt=Once upon a time", "--max-tokens=8"},
      &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(absl::StartsWith(out, "Once upon a time")) << out;
  out =
      RunCommand({BinDir() + "/latentkv", "generate", "--server=" + addr_,
                  "--prompt=Once upon a time", "--max-tokens=8", "--timeout=5"},
                 &code);
  EXPECT_NE(code, 0) << out;
  // HTTP: HTTPS only.
  EXPECT_EQ(Curl("https", "/v1/models"), 200);
  EXPECT_EQ(Curl("http", "/v1/models"), 0);

  // Every process listens where it says, and nowhere else.
  const std::vector<ChildProcess> coords =
      ChildrenNamed(serve_->pid(), "latentkv-coord");
  const std::vector<ChildProcess> workers =
      ChildrenNamed(serve_->pid(), "latentkv-worke");
  const std::vector<ChildProcess> stores =
      ChildrenNamed(serve_->pid(), "latentkv-kvsto");
  ASSERT_EQ(coords.size(), 1u);
  ASSERT_EQ(workers.size(), 1u);
  ASSERT_EQ(stores.size(), 1u);
  const int public_port = std::stoi(addr_.substr(addr_.rfind(':') + 1));
  const std::set<int> coord_ports = ListeningPorts(coords[0].pid);
  ASSERT_EQ(coord_ports.size(), 4u);  // public, internal, HTTP, metrics
  EXPECT_TRUE(coord_ports.count(public_port));
  EXPECT_TRUE(coord_ports.count(http_port_));
  EXPECT_TRUE(coord_ports.count(metrics_port_));
  int internal_port = 0;
  for (int p : coord_ports) {
    if (p != public_port && p != http_port_ && p != metrics_port_) {
      internal_port = p;
    }
  }
  const std::set<int> worker_ports = ListeningPorts(workers[0].pid);
  const std::set<int> store_ports = ListeningPorts(stores[0].pid);
  ASSERT_EQ(worker_ports.size(), 2u);  // gRPC, metrics
  ASSERT_EQ(store_ports.size(), 2u);
  EXPECT_TRUE(worker_ports.count(metrics_port_ + 1));
  EXPECT_TRUE(store_ports.count(metrics_port_ + 2));
  const int worker_port = *worker_ports.begin() == metrics_port_ + 1
                              ? *worker_ports.rbegin()
                              : *worker_ports.begin();
  const int store_port = *store_ports.begin() == metrics_port_ + 2
                             ? *store_ports.rbegin()
                             : *store_ports.begin();

  // The internal ports: plaintext and TLS without a member certificate are
  // refused; serve's member certificate gets in (and then the cluster
  // secret is still wanted).
  auth::TlsFiles member{Flag(coords[0], "cluster_cert_file"),
                        Flag(coords[0], "cluster_key_file"),
                        Flag(coords[0], "cluster_ca_file")};
  auto member_pem = auth::LoadTlsFiles(member, true, true);
  ASSERT_TRUE(member_pem.ok()) << member_pem.status();
  auth::TlsPem no_cert;
  no_cert.ca = member_pem->ca;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("latentkv-cluster");
  for (int port : {internal_port, worker_port, store_port}) {
    const std::string a = "127.0.0.1:" + std::to_string(port);
    SCOPED_TRACE(a);
    EXPECT_EQ(
        HealthCheck(grpc::CreateChannel(a, grpc::InsecureChannelCredentials())),
        grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(HealthCheck(grpc::CreateCustomChannel(
                  a, auth::TlsChannelCredentials(no_cert), args)),
              grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(HealthCheck(grpc::CreateCustomChannel(
                  a, auth::TlsChannelCredentials(*member_pem), args)),
              grpc::StatusCode::OK);
  }
  auto control = pb::Control::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(internal_port),
      auth::TlsChannelCredentials(*member_pem), args));
  grpc::ClientContext ctx;
  pb::RegisterRequest req;
  req.set_worker_id("attacker-0");
  req.set_address("127.0.0.1:9");
  pb::RegisterResponse resp;
  EXPECT_EQ(control->Register(&ctx, req, &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  // The kvstore took the workers' blocks: its layout (fixed by serve from
  // the model) is theirs.
  out = RunCommand(
      {BinDir() + "/latentkv", "generate", "--server=" + addr_,
       "--tls-ca=" + ca_,
       "--prompt=Once upon a time, there was a little girl named Lily. She "
       "loved to play outside in the park with her friends every day.",
       "--max-tokens=4"},
      &code);
  ASSERT_EQ(code, 0) << out;
  double stored = 0;
  for (int i = 0; i < 100 && !(stored > 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stored =
        Get(Scrape(metrics_port_ + 2), "latentkv_kvstore_stored_blocks_total");
  }
  EXPECT_GT(stored, 0) << Log();
}

}  // namespace
}  // namespace latentkv::testing
