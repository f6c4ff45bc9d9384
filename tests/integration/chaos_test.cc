// Chaos: processes killed mid-stream and a coordinator restarted under its
// workers. Each time, a request that completes carries exactly the tokens
// of its undisturbed run (none lost, none repeated: the coordinator resumes
// a stream cut off by a dead worker on another one), and one that cannot
// complete ends with a clear error. (Partitions and the soak:
// partition_test.cc, soak_test.cc.)
#include "tests/integration/chaos.h"

#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

TEST(ChaosTest, AWorkerKilledMidStreamLosesNoTokens) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.worker_args = {"--max_batch=4"};  // streams queue: the kill finds some
  Cluster c(o);
  const std::vector<std::string> prompts = ChaosPrompts();
  const auto refs = SoloRuns(c.stub(), prompts);
  ASSERT_EQ(refs.size(), prompts.size());
  const std::vector<StreamResult> got =
      RunWithChaos(c.stub(), prompts, /*after_tokens=*/150,
                   [&] { c.worker(0).Stop(SIGKILL, 5); });
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok())
        << prompts[i] << ": " << got[i].status.error_message();
    EXPECT_EQ(got[i].tokens, refs[i]) << prompts[i];
  }
  // The kill did cut streams off (else this test proved nothing).
  EXPECT_NE(c.Logs().find("coordinator: worker w0 failed"), std::string::npos)
      << c.Logs();
}

TEST(ChaosTest, ACoordinatorRestartKeepsItsWorkers) {
  const int port = PickFreePort(), internal = PickFreePort();
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.worker_args = {"--max_batch=4"};
  o.coordinator_args = {"--port=" + std::to_string(port),
                        "--internal_port=" + std::to_string(internal)};
  Cluster c(o);
  const std::vector<std::string> prompts = ChaosPrompts();
  const auto refs = SoloRuns(c.stub(), prompts);
  const pid_t worker = c.worker(0).pid();
  const std::vector<StreamResult> got =
      RunWithChaos(c.stub(), prompts, /*after_tokens=*/100,
                   [&] { c.coordinator().Stop(SIGKILL, 5); });
  int cut = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].status.ok()) {
      EXPECT_EQ(got[i].tokens, refs[i]) << prompts[i];
      continue;
    }
    ++cut;
    // Cut off with the coordinator: a clear error, and what did arrive is
    // the start of the right answer.
    EXPECT_EQ(got[i].status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << got[i].status.error_message();
    EXPECT_FALSE(got[i].status.error_message().empty());
    ASSERT_LE(got[i].tokens.size(), refs[i].size());
    EXPECT_TRUE(
        std::equal(got[i].tokens.begin(), got[i].tokens.end(), refs[i].begin()))
        << prompts[i];
  }
  EXPECT_GT(cut, 0);

  // A new coordinator on the same ports: the same worker process registers
  // with it and serves the same answers.
  const std::string dir = MakeTempDir();
  Process fresh(
      {BinDir() + "/latentkv-coordinator", "--model=" + Stories260kDir(),
       "--port=" + std::to_string(port),
       "--internal_port=" + std::to_string(internal),
       "--port_file=" + dir + "/addr", "--heartbeat_ms=200",
       "--worker_timeout_ms=1500"},
      dir + "/coordinator.log");
  ASSERT_FALSE(WaitForLine(dir + "/addr", 30).empty());
  ASSERT_TRUE(WaitForWorkers(c.stub(), 1, 30)) << c.Logs();
  EXPECT_TRUE(c.worker(0).Alive());
  EXPECT_EQ(c.worker(0).pid(), worker);
  for (size_t i = 0; i < prompts.size(); i += 3) {
    StreamResult r = Generate(c.stub(), ChaosRequest(prompts[i]));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens, refs[i]) << prompts[i];
  }
  EXPECT_EQ(fresh.Stop(SIGTERM, 30), 0);
}

// serve's kvstore, a tensor-parallel follower rank and a prefill worker:
// killed mid-stream, every request still completes with its own tokens
// (the store is a cache; a group that lost a rank fails its streams over to
// another group; a decode worker whose prefill worker died prefills
// itself), and serve restarts what died.
class ServeChaosTest
    : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(ServeChaosTest, KilledMidStreamEveryRequestCompletesIntact) {
  const std::vector<std::string>& topology = GetParam();
  const std::string victim = topology[0];  // in the victim's command line
  const std::string dir = MakeTempDir();
  std::vector<std::string> args = {
      BinDir() + "/latentkv",         "serve",
      "--model=" + Stories260kDir(),  "--port=0",
      "--port-file=" + dir + "/addr", "--max-batch=4"};
  args.insert(args.end(), topology.begin() + 1, topology.end());
  Process serve(args, dir + "/serve.log");
  const std::string addr = WaitForLine(dir + "/addr", 90);
  auto log = [&] {
    std::ifstream in(dir + "/serve.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  ASSERT_FALSE(addr.empty()) << log();
  auto stub = pb::Generation::NewStub(
      grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  const std::vector<std::string> prompts = ChaosPrompts();
  const auto refs = SoloRuns(*stub, prompts);
  pid_t killed = -1;
  const std::vector<StreamResult> got =
      RunWithChaos(*stub, prompts, /*after_tokens=*/100, [&] {
        killed = ChildWithArg(serve.pid(), victim);
        if (killed > 0) kill(killed, SIGKILL);
      });
  ASSERT_GT(killed, 0) << log();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok())
        << prompts[i] << ": " << got[i].status.error_message();
    EXPECT_EQ(got[i].tokens, refs[i]) << prompts[i];
  }
  // Restarted, and still right.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (log().find("restarting") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(log().find("restarting"), std::string::npos) << log();
  for (size_t i = 0; i < prompts.size(); i += 4) {
    StreamResult r = Generate(*stub, ChaosRequest(prompts[i]));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens, refs[i]) << prompts[i];
  }
  stub.reset();
  EXPECT_EQ(serve.Stop(SIGINT, 60), 0) << log();
}

INSTANTIATE_TEST_SUITE_P(
    Victims, ServeChaosTest,
    ::testing::Values(std::vector<std::string>{"/latentkv-kvstore",
                                               "--workers=2", "--kvstore"},
                      std::vector<std::string>{"--role=prefill",
                                               "--prefill-workers=1",
                                               "--decode-workers=1"}));

}  // namespace
}  // namespace latentkv::testing
