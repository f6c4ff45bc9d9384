// Tensor-parallel worker groups as real processes on loopback (Gloo TCP):
// TP = 2 and TP = 4 stream exactly TP = 1's greedy tokens, concurrently and
// with KV eviction on, and give TP = 1's embeddings; a group whose follower is
// SIGKILLed leaves, and the coordinator finishes its requests on another group
// with the right tokens.
#include <signal.h>

#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

const std::vector<std::string> kPrompts = {
    "Once upon a time", "The little dog", "Tom and Lily went",
    "One day, a bird",  "The sun was",    "There was a big tree"};

const std::vector<std::string> kFlags = {
    "--page_size=4", "--kv_policy=spindle", "--kv_codebook_layers=0",
    "--kv_window=8", "--kv_capacity=40",    "--max_step_tokens=32"};

// Every prompt at once; the tokens of each.
std::vector<std::vector<int32_t>> RunConcurrently(Cluster& c, int max_tokens) {
  std::vector<StreamResult> r(kPrompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    threads.emplace_back(
        [&, i] { r[i] = Generate(c.stub(), Greedy(kPrompts[i], max_tokens)); });
  }
  for (auto& t : threads) t.join();
  std::vector<std::vector<int32_t>> out;
  for (const StreamResult& s : r) {
    EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    out.push_back(s.tokens);
  }
  return out;
}

// Each prompt's embedding (Generation.Embed).
std::vector<std::vector<float>> Embeddings(Cluster& c) {
  std::vector<std::vector<float>> out;
  for (const std::string& p : kPrompts) {
    grpc::ClientContext ctx;
    latentkv::v1::EmbedRequest req;
    req.set_input(p);
    latentkv::v1::EmbedResponse resp;
    const grpc::Status st = c.stub().Embed(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    out.emplace_back(resp.embedding().begin(), resp.embedding().end());
  }
  return out;
}

std::vector<std::vector<float>>& ReferenceEmbeddingsStore() {
  static std::vector<std::vector<float>> v;
  return v;
}

std::vector<std::vector<int32_t>> Reference() {
  static const std::vector<std::vector<int32_t>> ref = [] {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    o.worker_args = kFlags;
    Cluster c(o);
    std::vector<std::vector<int32_t>> out;
    for (const std::string& p : kPrompts) {
      StreamResult s = Generate(c.stub(), Greedy(p, 80));
      EXPECT_TRUE(s.status.ok());
      out.push_back(s.tokens);
    }
    ReferenceEmbeddingsStore() = Embeddings(c);
    return out;
  }();
  return ref;
}

const std::vector<std::vector<float>>& ReferenceEmbeddings() {
  Reference();
  return ReferenceEmbeddingsStore();
}

class TensorParallelServingTest : public ::testing::TestWithParam<int> {};

TEST_P(TensorParallelServingTest, GroupStreamsTheSingleRankTokens) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.tp = GetParam();
  o.worker_args = kFlags;
  Cluster c(o);
  const auto got = RunConcurrently(c, 80);
  const auto want = Reference();
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_FALSE(want[i].empty());
    EXPECT_EQ(got[i], want[i]) << kPrompts[i];
  }
  // Embeddings: the group's hidden states are TP = 1's (up to the order of
  // the all-reduce's sums).
  const auto emb = Embeddings(c);
  const auto& emb_want = ReferenceEmbeddings();
  for (size_t i = 0; i < emb_want.size(); ++i) {
    ASSERT_EQ(emb[i].size(), emb_want[i].size()) << kPrompts[i];
    ASSERT_FALSE(emb[i].empty());
    for (size_t j = 0; j < emb[i].size(); ++j) {
      EXPECT_NEAR(emb[i][j], emb_want[i][j], 1e-4) << kPrompts[i] << " " << j;
    }
  }
  // Every follower rank answers Kubernetes-style health probes.
  for (int r = 1; r < o.tp; ++r) {
    const std::string addr = c.follower_address(0, r);
    ASSERT_FALSE(addr.empty()) << "rank " << r;
    auto stub = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
    for (const char* service : {"liveness", "readiness", ""}) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(5));
      grpc::health::v1::HealthCheckRequest req;
      req.set_service(service);
      grpc::health::v1::HealthCheckResponse resp;
      ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok()) << "rank " << r;
      EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING)
          << "rank " << r << " service '" << service << "'";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, TensorParallelServingTest,
                         ::testing::Values(2, 4));

TEST(TensorParallelFailureTest, DeadFollowerTakesItsGroupOutAndRequestsMoveOn) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.tp = 2;
  o.worker_args = kFlags;
  Cluster c(o);
  // Group 0 loses its follower: its leader notices within a keep-alive and
  // exits; requests go to group 1 (after a retry for any that hit group 0).
  ASSERT_EQ(kill(c.follower(0, 1).pid(), SIGKILL), 0);
  const auto got = RunConcurrently(c, 80);
  const auto want = Reference();
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i], want[i]) << kPrompts[i];
  }
  // The broken leader is gone.
  const int status = c.worker(0).Stop(SIGTERM, 10);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3)
      << "status " << status << "\n"
      << c.Logs();
}

}  // namespace
}  // namespace latentkv::testing
