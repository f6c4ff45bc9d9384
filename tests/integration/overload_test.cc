// Bounded overload over real processes (coordinator + 2 workers,
// stories260K): far more concurrent greedy requests than the admission
// bounds let in. Every request either completes with exactly the tokens its
// prompt gives alone (nothing lost, duplicated or truncated) or fails with
// RESOURCE_EXHAUSTED before any token; nothing else (no other code, no
// deadline hit); every process survives and serves afterwards. Once with the
// coordinator's bound (--max_inflight) doing the shedding, once with the
// workers' queue bound (--max_waiting).
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;

const std::vector<std::string> kPrompts = {
    "Once upon a time", "The little dog",   "Tom and Lily went",
    "One day, a bird",  "The sun was",      "A cat named Tim",
    "The boy wanted",   "It was a cold day"};
constexpr int kMaxTokens = 24;
constexpr int kRequests = 96;
constexpr double kDeadlineS = 60;

struct Outcome {
  int ok = 0;
  int shed = 0;
  int shed_by_coordinator = 0;  // the coordinator's in-flight bound
  int shed_by_worker = 0;       // a worker's queue bound
};

Outcome Overload(Cluster& cluster) {
  // What each prompt gives alone (greedy is deterministic).
  std::vector<StreamResult> solo;
  for (const std::string& p : kPrompts) {
    solo.push_back(Generate(cluster.stub(), Greedy(p, kMaxTokens), kDeadlineS));
    EXPECT_TRUE(solo.back().status.ok()) << solo.back().status.error_message();
    EXPECT_FALSE(solo.back().tokens.empty());
  }
  std::vector<StreamResult> results(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      results[i] = Generate(cluster.stub(),
                            Greedy(kPrompts[i % kPrompts.size()], kMaxTokens),
                            kDeadlineS);
    });
  }
  for (std::thread& t : threads) t.join();
  Outcome o;
  for (int i = 0; i < kRequests; ++i) {
    const StreamResult& r = results[i];
    const StreamResult& want = solo[i % kPrompts.size()];
    if (r.status.ok()) {
      ++o.ok;
      EXPECT_EQ(r.tokens, want.tokens) << "request " << i;
      EXPECT_EQ(r.text, want.text) << "request " << i;
      EXPECT_EQ(r.finish, want.finish) << "request " << i;
      continue;
    }
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << "request " << i << ": " << r.status.error_message();
    EXPECT_TRUE(r.tokens.empty())
        << "request " << i << " failed after " << r.tokens.size()
        << " tokens: " << r.status.error_message();
    if (r.status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) continue;
    ++o.shed;
    const std::string& msg = r.status.error_message();
    if (msg.find("requests in flight") != std::string::npos) {
      ++o.shed_by_coordinator;
    } else if (msg.find("queue is full") != std::string::npos) {
      ++o.shed_by_worker;
    }
  }
  EXPECT_EQ(o.ok + o.shed, kRequests);
  EXPECT_GE(o.ok, 1);
  EXPECT_GE(o.shed, 1);
  // Everybody is alive and still serves, with the same answer.
  EXPECT_TRUE(cluster.coordinator().Alive());
  EXPECT_TRUE(cluster.worker(0).Alive());
  EXPECT_TRUE(cluster.worker(1).Alive());
  for (size_t p = 0; p < kPrompts.size(); ++p) {
    StreamResult after =
        Generate(cluster.stub(), Greedy(kPrompts[p], kMaxTokens), kDeadlineS);
    EXPECT_TRUE(after.status.ok()) << after.status.error_message();
    EXPECT_EQ(after.tokens, solo[p].tokens);
  }
  std::fprintf(stderr, "ok %d shed %d (coordinator %d, worker %d)\n", o.ok,
               o.shed, o.shed_by_coordinator, o.shed_by_worker);
  return o;
}

TEST(BoundedOverloadTest, CoordinatorBoundShedsTheRestWithResourceExhausted) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.coordinator_args = {"--max_inflight=6"};
  Cluster cluster(o);
  const Outcome out = Overload(cluster);
  EXPECT_GE(out.shed_by_coordinator, 1) << cluster.Logs();
  EXPECT_EQ(out.shed_by_worker, 0);
}

TEST(BoundedOverloadTest, WorkerQueueBoundShedsTheRestWithResourceExhausted) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.worker_args = {"--max_waiting=1", "--max_batch=2"};
  Cluster cluster(o);
  const Outcome out = Overload(cluster);
  EXPECT_GE(out.shed_by_worker, 1) << cluster.Logs();
  EXPECT_EQ(out.shed_by_coordinator, 0);
}

}  // namespace
}  // namespace latentkv::testing
