// Test support: a real local cluster (latentkv-coordinator + workers as
// child processes on 127.0.0.1 with ephemeral ports) and gRPC helpers.
#ifndef LATENTKV_TESTS_INTEGRATION_CLUSTER_H_
#define LATENTKV_TESTS_INTEGRATION_CLUSTER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "latentkv/v1/generation.grpc.pb.h"
#include "latentkv/v1/worker.grpc.pb.h"
#include "tests/integration/process.h"

namespace latentkv::testing {

struct ClusterOptions {
  std::string model_dir;
  int workers = 1;
  int tp =
      1;  // tensor-parallel ranks per worker (followers are extra processes)
  // Ranks of worker i's group when given (else tp).
  std::vector<int> per_worker_tp;
  std::vector<std::string> coordinator_args;
  std::vector<std::string> worker_args;
  // Extra flags of worker i (after worker_args; a repeated flag wins).
  std::vector<std::vector<std::string>> per_worker_args;
  // The coordinator's OpenAI HTTP API, and Prometheus /metrics on the
  // coordinator and every worker (rank 0), on free ports.
  bool http = false;
  bool metrics = false;
  // An API key for the coordinator (written to a key file it reads); the
  // readiness probe presents it. Empty: no authentication.
  std::string api_key;
};

class Cluster {
 public:
  // Starts everything and waits until every worker has registered; aborts
  // the test binary (with logs printed) if that fails.
  explicit Cluster(const ClusterOptions& options);
  ~Cluster();

  // The public gRPC port (Generation, health, reflection).
  const std::string& address() const { return address_; }
  // The coordinator's internal port (Control), where workers register.
  const std::string& internal_address() const { return internal_address_; }
  const std::string& worker_address(int i) const { return worker_addrs_[i]; }
  latentkv::v1::Generation::Stub& stub() { return *stub_; }
  std::unique_ptr<latentkv::v1::Worker::Stub> WorkerStub(int i) const;
  // Worker i's GetStats (a failed call is a test failure; stats then empty).
  latentkv::v1::WorkerStats WorkerStats(int i) const;
  Process& worker(int i) { return *workers_[i]; }
  // Rank r (>= 1) of worker i's tensor-parallel group.
  Process& follower(int i, int r) {
    return *followers_[follower_first_[i] + r - 1];
  }
  // host:port of that rank's grpc.health.v1 server ("" if it never bound).
  std::string follower_address(int i, int r) const;
  Process& coordinator() { return *coordinator_; }
  // Ports of ClusterOptions::http / metrics (0 when off).
  int http_port() const { return http_port_; }
  int coordinator_metrics_port() const { return coordinator_metrics_port_; }
  int worker_metrics_port(int i) const { return worker_metrics_ports_[i]; }
  std::string Logs() const;

 private:
  std::string dir_;
  std::string address_;
  std::string internal_address_;
  std::unique_ptr<Process> coordinator_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::vector<std::unique_ptr<Process>> followers_;
  std::vector<int> follower_first_;  // worker i's first in followers_
  std::vector<std::string> worker_addrs_;
  int http_port_ = 0;
  int coordinator_metrics_port_ = 0;
  std::vector<int> worker_metrics_ports_;
  std::unique_ptr<latentkv::v1::Generation::Stub> stub_;
};

// A test suite whose tests share one default cluster (one worker,
// stories260K): started before its first test, stopped after its last.
class SharedClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  static Cluster* cluster_;
};

// The outcome of one streamed Generate call.
struct StreamResult {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::string text;
  latentkv::v1::FinishReason finish = latentkv::v1::FINISH_REASON_UNSPECIFIED;
  int messages = 0;
};

// Streams `req` to the end; `progress` (optional) counts the tokens as
// they arrive.
StreamResult Generate(latentkv::v1::Generation::Stub& stub,
                      const latentkv::v1::GenerateRequest& req,
                      double timeout_s = 60,
                      std::atomic<int64_t>* progress = nullptr);

// A request with greedy sampling.
latentkv::v1::GenerateRequest Greedy(const std::string& prompt, int max_tokens);

// Six greedy streams of `tokens` tokens that ignore EOS, all at once. With
// `victim` (a process of `c`), it is SIGKILLed mid-stream: once worker
// `streaming` is running streams that have tokens (a test failure if that
// does not happen within 10 s).
std::vector<StreamResult> LongStreams(Cluster& c, int tokens,
                                      Process* victim = nullptr,
                                      int streaming = 1);

// The first line of ../shared/text/tinystories_train_excerpt.txt longer than
// 400 characters, cut to 400 ("" if none).
std::string LongStoryLine();

// Waits (up to 10 s) until the kvstore at `address` holds at least
// `min_blocks` blocks and its count has not changed for 300 ms: every
// rank's publication (asynchronous, after a request ends) has landed.
// False on timeout.
bool WaitForStoreToSettle(const std::string& address, int64_t min_blocks = 1);

}  // namespace latentkv::testing

#endif  // LATENTKV_TESTS_INTEGRATION_CLUSTER_H_
