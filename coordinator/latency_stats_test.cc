#include "coordinator/latency_stats.h"

#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace latentkv::coordinator {
namespace {

TEST(LatencyTrackerTest, PercentilesMatchASortedReference) {
  LatencyTracker t(1000);
  std::mt19937 rng(4);
  std::exponential_distribution<double> ex(0.1);
  std::vector<double> ttft;
  for (int i = 0; i < 997; ++i) {
    const double v = ex(rng);
    ttft.push_back(v);
    t.Record(v, v + 50, 11);
  }
  std::sort(ttft.begin(), ttft.end());
  const LatencySummary s = t.Ttft();
  EXPECT_EQ(s.count, 997);
  // Nearest rank: ceil(p * n) - 1 in the sorted samples.
  EXPECT_DOUBLE_EQ(s.p50_ms, ttft[498]);
  EXPECT_DOUBLE_EQ(s.p90_ms, ttft[897]);
  EXPECT_DOUBLE_EQ(s.p99_ms, ttft[987]);
  // TPOT = (e2e - ttft) / (tokens - 1) = 50 / 10.
  EXPECT_NEAR(t.Tpot().p50_ms, 5.0, 1e-9);
  EXPECT_NEAR(t.Tpot().mean_ms, 5.0, 1e-9);
}

TEST(LatencyTrackerTest, WindowKeepsTheNewestAndEdgeCases) {
  LatencyTracker t(3);
  EXPECT_EQ(t.Ttft().count, 0);
  t.Record(1, 1, 0);  // no tokens: nothing
  t.Record(5, 5, 1);  // one token: no TPOT
  EXPECT_EQ(t.completed(), 1);
  EXPECT_EQ(t.Tpot().count, 0);
  for (double v : {10.0, 20.0, 30.0}) t.Record(v, v, 1);
  EXPECT_EQ(t.Ttft().count, 3);
  EXPECT_DOUBLE_EQ(t.Ttft().mean_ms, 20.0);  // the 5 fell out
  EXPECT_EQ(t.completed(), 4);
}

}  // namespace
}  // namespace latentkv::coordinator
