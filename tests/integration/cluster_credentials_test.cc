// `latentkv cluster-credentials` and `latentkv health` over real processes:
// what a Kubernetes deployment runs (deploy/README.md). The credentials
// written for a cluster let a worker serve mutual TLS on its internal port;
// `health` with them reports SERVING and exits 0, and without them, with
// another cluster's, or for a service the worker does not serve, it exits
// non-zero. Credentials are never overwritten.
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/process.h"

namespace latentkv::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> MemberFlags(const std::string& dir,
                                     const std::string& prefix) {
  return {prefix + "ca_file=" + dir + "/ca.crt",
          prefix + "cert_file=" + dir + "/tls.crt",
          prefix + "key_file=" + dir + "/tls.key"};
}

TEST(ClusterCredentialsTest, HealthProbesAnInternalPortWithTheMembersCert) {
  const std::string dir = MakeTempDir();
  const std::string creds = dir + "/creds", other = dir + "/other";
  int code = -1;
  std::string out = RunCommand({BinDir() + "/latentkv", "cluster-credentials",
                                "--out=" + creds, "--days=2"},
                               &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("kubectl create secret generic latentkv-cluster"),
            std::string::npos)
      << out;
  for (const char* f : {"secret", "ca.crt", "tls.crt", "tls.key"}) {
    struct stat st {};
    ASSERT_EQ(stat((creds + "/" + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  // Never overwritten: a second run fails and leaves the files as they were.
  const std::string key = ReadAll(creds + "/tls.key");
  RunCommand({BinDir() + "/latentkv", "cluster-credentials", "--out=" + creds},
             &code);
  EXPECT_NE(code, 0);
  EXPECT_EQ(ReadAll(creds + "/tls.key"), key);
  RunCommand({BinDir() + "/latentkv", "cluster-credentials", "--out=" + other},
             &code);
  ASSERT_EQ(code, 0);

  std::vector<std::string> worker = {
      BinDir() + "/latentkv-worker", "--model=" + Stories260kDir(), "--port=0",
      "--port_file=" + dir + "/w.addr",
      "--cluster_secret_file=" + creds + "/secret"};
  for (std::string& f : MemberFlags(creds, "--cluster_")) worker.push_back(f);
  Process w(worker, dir + "/w.log");
  const std::string addr = WaitForLine(dir + "/w.addr", 60);
  ASSERT_FALSE(addr.empty()) << ReadAll(dir + "/w.log");

  auto health = [&](const std::string& service,
                    const std::vector<std::string>& extra) {
    std::vector<std::string> args = {BinDir() + "/latentkv", "health",
                                     "--server=" + addr, "--service=" + service,
                                     "--timeout=5"};
    args.insert(args.end(), extra.begin(), extra.end());
    int rc = -1;
    const std::string text = RunCommand(args, &rc, /*merge_stderr=*/true);
    return std::make_pair(rc, text);
  };
  for (const char* service : {"liveness", "readiness", ""}) {
    auto [rc, text] = health(service, MemberFlags(creds, "--cluster-"));
    EXPECT_EQ(rc, 0) << service << ": " << text;
    EXPECT_NE(text.find("SERVING"), std::string::npos) << text;
  }
  // Plaintext, another cluster's member, an unknown service: not healthy.
  EXPECT_NE(health("liveness", {}).first, 0);
  EXPECT_NE(health("liveness", MemberFlags(other, "--cluster-")).first, 0);
  auto [rc, text] = health("no-such", MemberFlags(creds, "--cluster-"));
  EXPECT_NE(rc, 0);
  EXPECT_NE(text.find("unknown"), std::string::npos) << text;
  // Half the member credentials is a usage error, not a probe failure.
  EXPECT_EQ(
      health("liveness", {"--cluster-ca-file=" + creds + "/ca.crt"}).first, 2);
  EXPECT_EQ(w.Stop(SIGTERM, 30), 0);
}

}  // namespace
}  // namespace latentkv::testing
