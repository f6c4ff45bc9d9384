// KV-aware routing with real processes on loopback: a coordinator and two
// workers (single ranks, or tensor-parallel groups of 2) with local prefix
// caches. Two different long prompts run at once
// (load spreads them over both workers); then a follow-up of each, sharing
// its long prefix, must go to the worker that holds that prefix (the
// coordinator learns it from the workers' prefix events) and reuse the
// cached pages there, streaming the same tokens as a worker without any
// prefix cache.
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster.h"
#include "tests/integration/metrics_scrape.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

pb::ServingStats Serving(Cluster& c) {
  auto stub = pb::Control::NewStub(grpc::CreateChannel(
      c.internal_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  pb::ServingStats s;
  EXPECT_TRUE(stub->GetServingStats(&ctx, pb::ServingStatsRequest(), &s).ok());
  return s;
}

pb::GenerateRequest Ids(const std::vector<int32_t>& ids, int max_tokens) {
  pb::GenerateRequest r = Greedy("", max_tokens);
  for (int32_t t : ids) r.add_prompt_token_ids(t);
  return r;
}

// Workers of one rank, and tensor-parallel groups of 2 (the leader's prefix
// index decides and reports events; the follower repeats its changes).
class KvRoutingTest : public ::testing::TestWithParam<int> {};

TEST_P(KvRoutingTest, FollowUpsGoWhereTheirPrefixIsCached) {
  constexpr int kPage = 16;
  // Two 161- and 177-token conversations (distinct lengths tell the workers
  // apart by the prompt tokens they looked up) and their follow-ups.
  std::vector<std::vector<int32_t>> first(2), follow(2);
  for (int k = 0; k < 2; ++k) {
    first[k] = {1};
    for (int j = 0; j < 160 + 16 * k; ++j) {
      first[k].push_back(259 + (j * 7 + k * 101) % 250);
    }
    follow[k] = first[k];
    for (int j = 0; j < 9; ++j) follow[k].push_back(300 + j + 20 * k);
  }
  std::vector<std::vector<int32_t>> want(2);
  {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    o.worker_args = {"--prefix_caching=false"};
    Cluster plain(o);
    for (int k = 0; k < 2; ++k) {
      StreamResult r = Generate(plain.stub(), Ids(follow[k], 24));
      ASSERT_TRUE(r.status.ok()) << r.status.error_message();
      want[k] = r.tokens;
    }
  }
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.tp = GetParam();
  o.coordinator_args = {"--heartbeat_ms=100", "--routing=kv"};
  o.worker_args = {"--page_size=" + std::to_string(kPage)};
  o.metrics = true;
  Cluster c(o);
  // Both conversations at once: the second goes to the idle worker.
  {
    auto a = std::async(std::launch::async,
                        [&] { return Generate(c.stub(), Ids(first[0], 8)); });
    auto b = std::async(std::launch::async,
                        [&] { return Generate(c.stub(), Ids(first[1], 8)); });
    ASSERT_TRUE(a.get().status.ok());
    ASSERT_TRUE(b.get().status.ok());
  }
  // Which worker holds which conversation.
  int holder[2] = {-1, -1};
  for (int i = 0; i < 2; ++i) {
    const pb::WorkerStats s = c.WorkerStats(i);
    for (int k = 0; k < 2; ++k) {
      if (s.prefix_lookup_tokens() == first[k].size()) holder[k] = i;
    }
  }
  ASSERT_NE(holder[0], -1);
  ASSERT_NE(holder[1], -1);
  ASSERT_NE(holder[0], holder[1]) << "load routing should spread the two";
  // Let the workers' prefix events reach the coordinator (heartbeats every
  // 100 ms).
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  for (int k = 0; k < 2; ++k) {
    StreamResult r = Generate(c.stub(), Ids(follow[k], 24));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens, want[k]) << "follow-up " << k;
  }
  // Each follow-up reused its own conversation's pages on its holder: the
  // whole blocks of the first prompt plus its 8 generated tokens (7 of them
  // have KV), capped to leave the follow-up's last token to run.
  for (int k = 0; k < 2; ++k) {
    const pb::WorkerStats s = c.WorkerStats(holder[k]);
    const size_t cached = first[k].size() + 7;
    const size_t expect =
        std::min(cached, follow[k].size() - 1) / kPage * kPage;
    EXPECT_EQ(s.prefix_hits(), 1u) << "worker " << holder[k];
    EXPECT_EQ(s.prefix_hit_tokens(), expect) << "worker " << holder[k];
    EXPECT_EQ(s.prefix_lookup_tokens(), first[k].size() + follow[k].size());
  }
  const pb::ServingStats st = Serving(c);
  EXPECT_EQ(st.routed_prefix_hits(), 2u);
  EXPECT_GE(st.routed_prefix_tokens(), 2u * 160u);
  // The same on /metrics, with the index's blocks per worker.
  const std::vector<Sample> m = Scrape(c.coordinator_metrics_port());
  EXPECT_EQ(Get(m, "latentkv_coordinator_routed_prefix_hits_total"), 2.0);
  EXPECT_EQ(Get(m, "latentkv_coordinator_routed_prefix_tokens_total"),
            static_cast<double>(st.routed_prefix_tokens()));
  for (int i = 0; i < 2; ++i) {
    const pb::WorkerStats s = c.WorkerStats(i);
    EXPECT_GT(s.prefix_cached_blocks(), 0u);
  }
  double blocks = 0;
  for (const Sample& x : m) {
    if (x.name == "latentkv_coordinator_worker_cached_blocks") {
      EXPECT_GT(x.value, 0) << x.labels.at("worker");
      blocks += 1;
    }
  }
  EXPECT_EQ(blocks, 2);
}

INSTANTIATE_TEST_SUITE_P(Tp, KvRoutingTest, ::testing::Values(1, 2),
                         [](const auto& info) {
                           return "Tp" + std::to_string(info.param);
                         });

}  // namespace
}  // namespace latentkv::testing
