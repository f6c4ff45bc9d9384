#include "coordinator/worker_registry.h"

#include <map>

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

// An id is never taken over by another address while it is live: a forged
// registration of "a" elsewhere changes nothing; the same address refreshes
// it; once expired, the id may move.
TEST(WorkerRegistryTest, LiveIdsAreNotTakenOver) {
  WorkerRegistry r;
  const auto t0 = Clock::now();
  WorkerInfo a = W("a");
  a.address = "127.0.0.1:1000";
  ASSERT_TRUE(r.Register(a, t0));
  WorkerInfo forged = a;
  forged.address = "127.0.0.1:6666";
  EXPECT_FALSE(r.Register(forged, t0 + std::chrono::milliseconds(10)));
  ASSERT_EQ(r.List().size(), 1u);
  EXPECT_EQ(r.List()[0].address, "127.0.0.1:1000");
  EXPECT_TRUE(r.Register(a, t0 + std::chrono::milliseconds(20)));
  r.Expire(t0 + std::chrono::seconds(10), std::chrono::seconds(1));
  EXPECT_TRUE(r.Register(forged, t0 + std::chrono::seconds(11)));
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

TEST(WorkerRegistryTest, KvAwareRoutingTradesCachedPrefixAgainstLoad) {
  WorkerRegistry r;
  auto now = Clock::now();
  r.Register(W("a"), now);
  r.Register(W("b"), now);
  const std::map<std::string, int64_t> cached = {{"b", 80}};
  // Idle workers: b skips 80 of 100 prompt tokens (cost 20 vs 100).
  RouteHint hint{100, &cached};
  EXPECT_EQ(r.Acquire({}, hint)->id, "b");  // b: 100 active tokens now
  // b costs 20 + 100 = 120 > a's 100: the load wins.
  EXPECT_EQ(r.Acquire({}, hint)->id, "a");  // a: 100 active
  // a 100 + 100 = 200, b 120: back to b.
  EXPECT_EQ(r.Acquire({}, hint)->id, "b");
  r.Release("b", 100);
  r.Release("b", 100);
  r.Release("a", 100);
  // Without the cache hint the idle tie goes by id.
  EXPECT_EQ(r.Acquire({}, RouteHint{100, nullptr})->id, "a");
}

// A request goes only where its whole sequence fits in KV memory, however
// loaded the other workers are; a prefill worker needs the prompt only.
TEST(WorkerRegistryTest, RequestsGoWhereTheirSequenceFits) {
  WorkerRegistry r;
  auto now = Clock::now();
  WorkerInfo small = W("a-small"), big = W("b-big", /*waiting=*/50),
             prefill = W("c-prefill");
  small.max_context = 200;
  big.max_context = 512;
  prefill.max_context = 100;
  prefill.role = "prefill";
  r.Register(small, now);
  r.Register(big, now);
  r.Register(prefill, now);
  EXPECT_EQ(r.MaxContext(), 512u);  // prefill workers do not count
  // 150 tokens: the idle small worker; 300: only the big one.
  EXPECT_EQ(r.Acquire({}, RouteHint{100, nullptr, 150})->id, "a-small");
  EXPECT_EQ(r.Acquire({}, RouteHint{100, nullptr, 300})->id, "b-big");
  EXPECT_FALSE(r.Acquire({"b-big"}, RouteHint{100, nullptr, 300}).has_value());
  // Beyond every worker: nobody.
  EXPECT_FALSE(r.Acquire({}, RouteHint{100, nullptr, 600}).has_value());
  // The prefill worker holds 90 prompt tokens, not 120.
  EXPECT_EQ(r.AcquirePrefill({}, RouteHint{90, nullptr, 400})->id, "c-prefill");
  EXPECT_FALSE(r.AcquirePrefill({}, RouteHint{120, nullptr, 400}).has_value());
  // Unknown (0) bounds nothing.
  WorkerRegistry u;
  u.Register(W("x"), now);
  EXPECT_EQ(u.MaxContext(), 0u);
  EXPECT_EQ(u.Acquire({}, RouteHint{10, nullptr, 100000})->id, "x");
}

TEST(WorkerRegistryTest, LoadRoutingIgnoresCachedPrefixes) {
  WorkerRegistry r(RoutingOptions{.kv_aware = false});
  auto now = Clock::now();
  r.Register(W("a"), now);
  r.Register(W("b"), now);
  const std::map<std::string, int64_t> cached = {{"b", 100}};
  EXPECT_EQ(r.Acquire({}, RouteHint{100, &cached})->id, "a");
}

TEST(WorkerRegistryTest, OverlapWeightScalesThePrefillTerm) {
  auto now = Clock::now();
  const std::map<std::string, int64_t> cached = {{"b", 50}};
  for (double weight : {0.0, 4.0}) {
    WorkerRegistry r(
        RoutingOptions{.kv_aware = true, .overlap_weight = weight});
    r.Register(W("a"), now);
    r.Register(W("b"), now);
    // b carries 120 active tokens; a none. Prefill saved on b: 50 tokens.
    ASSERT_EQ(r.Acquire({"a"}, RouteHint{120, nullptr})->id, "b");
    // a: weight * 100; b: weight * 50 + 120.
    const std::string want = weight * 100 < weight * 50 + 120 ? "a" : "b";
    EXPECT_EQ(r.Acquire({}, RouteHint{100, &cached})->id, want) << weight;
  }
}

}  // namespace
}  // namespace latentkv::coordinator
