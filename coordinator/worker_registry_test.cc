#include "coordinator/worker_registry.h"

#include "gtest/gtest.h"

namespace latentkv::coordinator {
namespace {

WorkerInfo W(const std::string& id, uint32_t waiting = 0, uint64_t pages = 0) {
  WorkerInfo w;
  w.id = id;
  w.address = "127.0.0.1:1";
  w.load.waiting = waiting;
  w.load.kv_pages_in_use = pages;
  return w;
}

TEST(WorkerRegistryTest, AcquireSpreadsLoadAndReleaseRestoresIt) {
  WorkerRegistry r;
  auto now = Clock::now();
  r.Register(W("a"), now);
  r.Register(W("b"), now);
  // Four requests alternate: each Acquire raises the chosen worker's load.
  std::vector<std::string> got;
  for (int i = 0; i < 4; ++i) got.push_back(r.Acquire({})->id);
  EXPECT_EQ(got, (std::vector<std::string>{"a", "b", "a", "b"}));
  r.Release("a");
  r.Release("a");
  EXPECT_EQ(r.Acquire({})->id, "a");
}

TEST(WorkerRegistryTest, ReportedQueueAndPagesBreakTies) {
  WorkerRegistry r;
  auto now = Clock::now();
  r.Register(W("a", /*waiting=*/3), now);
  r.Register(W("b", 0, /*pages=*/50), now);
  r.Register(W("c", 0, /*pages=*/10), now);
  EXPECT_EQ(r.Acquire({})->id, "c");
  EXPECT_EQ(r.Acquire({"c"})->id, "b");
  EXPECT_FALSE(r.Acquire({"a", "b", "c"}).has_value());
}

TEST(WorkerRegistryTest, ExpiresSilentWorkersAndForgetsThem) {
  WorkerRegistry r;
  auto t0 = Clock::now();
  r.Register(W("a"), t0);
  r.Register(W("b"), t0);
  EXPECT_TRUE(r.Heartbeat("b", {}, t0 + std::chrono::seconds(2)));
  auto gone = r.Expire(t0 + std::chrono::seconds(4), std::chrono::seconds(3));
  EXPECT_EQ(gone, std::vector<std::string>{"a"});
  EXPECT_FALSE(r.Heartbeat("a", {}, t0 + std::chrono::seconds(4)));
  EXPECT_EQ(r.size(), 1u);
  r.Release("a");  // a late release of a removed worker is harmless
}

TEST(WorkerRegistryTest, ReRegistrationKeepsInflightCount) {
  WorkerRegistry r;
  auto now = Clock::now();
  r.Register(W("a"), now);
  r.Register(W("b"), now);
  EXPECT_EQ(r.Acquire({})->id, "a");
  r.Register(W("a"), now);  // restart announcement
  EXPECT_EQ(r.Acquire({})->id, "b");
}

}  // namespace
}  // namespace latentkv::coordinator
