// A network partition: one worker runs in a network namespace this test
// makes (a veth pair, 10.213.x.0/30), and blackhole routes on both sides
// cut it off mid-stream, the way a dead switch would (no RST, no FIN).
// Checked: the coordinator notices within seconds (keepalive pings on
// internal channels) instead of waiting out TCP, every stream completes on
// the other worker with exactly its undisturbed tokens, the cut-off worker
// leaves the registry, and once the partition heals it registers again.
// Needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root in a container is enough);
// skipped, saying so, without them.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/chaos.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

std::string IpTool() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

// A network namespace joined to this one by a veth pair; removed on
// destruction.
class Netns {
 public:
  // Empty `*why` on success.
  explicit Netns(std::string* why) {
    ip_ = IpTool();
    if (ip_.empty()) {
      *why = "no ip(8) (iproute2)";
      return;
    }
    const int id = getpid() % 100000;
    ns_ = absl::StrCat("lkv-", id);
    host_if_ = absl::StrCat("lkvh", id);
    ns_if_ = absl::StrCat("lkvn", id);
    const std::string net = absl::StrCat("10.213.", getpid() % 250, ".");
    host_ip_ = net + "1";
    ns_ip_ = net + "2";
    std::string out;
    if (!Run({"netns", "add", ns_}, &out)) {
      *why = "cannot create a network namespace: " + out;
      return;
    }
    created_ = true;
    for (const std::vector<std::string>& cmd :
         std::vector<std::vector<std::string>>{
             {"link", "add", host_if_, "type", "veth", "peer", "name", ns_if_},
             {"link", "set", ns_if_, "netns", ns_},
             {"addr", "add", host_ip_ + "/30", "dev", host_if_},
             {"link", "set", host_if_, "up"},
             {"netns", "exec", ns_, ip_, "addr", "add", ns_ip_ + "/30", "dev",
              ns_if_},
             {"netns", "exec", ns_, ip_, "link", "set", ns_if_, "up"},
             {"netns", "exec", ns_, ip_, "link", "set", "lo", "up"}}) {
      if (!Run(cmd, &out)) {
        *why = "cannot set up the veth pair: " + out;
        return;
      }
    }
  }
  ~Netns() {
    std::string out;
    if (created_) {
      Run({"link", "del", host_if_}, &out);
      Run({"netns", "del", ns_}, &out);
    }
  }
  // Cuts (or heals) the link both ways with blackhole routes.
  void Partition(bool cut) {
    const char* verb = cut ? "add" : "del";
    std::string out;
    EXPECT_TRUE(Run({"route", verb, "blackhole", ns_ip_ + "/32"}, &out)) << out;
    EXPECT_TRUE(Run({"netns", "exec", ns_, ip_, "route", verb, "blackhole",
                     host_ip_ + "/32"},
                    &out))
        << out;
  }
  // `args` run inside the namespace.
  std::vector<std::string> Inside(std::vector<std::string> args) const {
    args.insert(args.begin(), {ip_, "netns", "exec", ns_});
    return args;
  }
  const std::string& host_ip() const { return host_ip_; }
  const std::string& ns_ip() const { return ns_ip_; }

 private:
  bool Run(std::vector<std::string> args, std::string* out) const {
    args.insert(args.begin(), ip_);
    int code = -1;
    *out = RunCommand(args, &code, /*merge_stderr=*/true);
    return code == 0;
  }
  std::string ip_, ns_, host_if_, ns_if_, host_ip_, ns_ip_;
  bool created_ = false;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(PartitionTest, ACutOffWorkerIsRoutedAroundAndReturnsWhenHealed) {
  std::string why;
  Netns net(&why);
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string dir = MakeTempDir();
  const std::string model = Stories260kDir();
  // The coordinator's internal port on the host end of the veth pair; its
  // public port on loopback.
  Process coord(
      {BinDir() + "/latentkv-coordinator", "--model=" + model, "--port=0",
       "--port_file=" + dir + "/c.addr", "--internal_host=" + net.host_ip(),
       "--internal_port=0", "--internal_port_file=" + dir + "/ci.addr",
       "--heartbeat_ms=200", "--worker_timeout_ms=1500"},
      dir + "/coordinator.log");
  const std::string addr = WaitForLine(dir + "/c.addr", 30);
  const std::string internal = WaitForLine(dir + "/ci.addr", 5);
  ASSERT_FALSE(addr.empty() || internal.empty())
      << ReadAll(dir + "/coordinator.log");
  auto worker_args = [&](const std::string& id, const std::string& host) {
    return std::vector<std::string>{BinDir() + "/latentkv-worker",
                                    "--model=" + model,
                                    "--host=" + host,
                                    "--port=0",
                                    "--port_file=" + dir + "/" + id + ".addr",
                                    "--coordinator=" + internal,
                                    "--worker_id=" + id,
                                    "--max_batch=4"};
  };
  Process cut(net.Inside(worker_args("cut", net.ns_ip())), dir + "/cut.log");
  Process kept(worker_args("kept", "127.0.0.1"), dir + "/kept.log");
  auto stub = pb::Generation::NewStub(
      grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  auto logs = [&] {
    return ReadAll(dir + "/coordinator.log") + ReadAll(dir + "/cut.log") +
           ReadAll(dir + "/kept.log");
  };
  ASSERT_TRUE(WaitForWorkers(*stub, 2, 60)) << logs();

  const std::vector<std::string> prompts = ChaosPrompts();
  const auto refs = SoloRuns(*stub, prompts);
  ASSERT_EQ(refs.size(), prompts.size());
  const auto start = std::chrono::steady_clock::now();
  const std::vector<StreamResult> got = RunWithChaos(
      *stub, prompts, /*after_tokens=*/150, [&] { net.Partition(true); },
      /*timeout_s=*/60);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok())
        << prompts[i] << ": " << got[i].status.error_message() << logs();
    EXPECT_EQ(got[i].tokens, refs[i]) << prompts[i];
  }
  // Streams were cut (else nothing was tested), and noticed in seconds.
  EXPECT_NE(ReadAll(dir + "/coordinator.log").find("worker cut failed"),
            std::string::npos)
      << logs();
  EXPECT_LT(seconds, 30);
  EXPECT_TRUE(WaitForWorkers(*stub, 1, 15)) << logs();

  net.Partition(false);
  EXPECT_TRUE(WaitForWorkers(*stub, 2, 30)) << logs();
  for (size_t i = 0; i < prompts.size(); i += 3) {
    StreamResult r = Generate(*stub, ChaosRequest(prompts[i]));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens, refs[i]) << prompts[i];
  }
  stub.reset();
  EXPECT_EQ(cut.Stop(SIGTERM, 30), 0);
  EXPECT_EQ(kept.Stop(SIGTERM, 30), 0);
  EXPECT_EQ(coord.Stop(SIGTERM, 30), 0);
}

}  // namespace
}  // namespace latentkv::testing
