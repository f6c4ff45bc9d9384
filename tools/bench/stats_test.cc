// The benchmark's statistics against straightforward references: percentiles
// from a full sort with the textbook interpolation formula (and values numpy
// gives), TTFT/TPOT/ITL on hand-made timelines, goodput on hand-made
// requests.
#include "tools/bench/stats.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace latentkv::bench {
namespace {

// numpy.percentile(v, p) (linear), written from the definition.
double RefPercentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double pos = (v.size() - 1) * p / 100.0;
  const double lo = std::floor(pos), hi = std::ceil(pos);
  return v[static_cast<size_t>(lo)] * (1 - (pos - lo)) +
         v[static_cast<size_t>(hi)] * (pos - lo);
}

TEST(PercentileTest, KnownValues) {
  // numpy.percentile(range(1, 11), [50, 90, 99]) = 5.5, 9.1, 9.91
  Distribution d = Summarize({10, 3, 1, 7, 2, 9, 4, 8, 6, 5});
  EXPECT_DOUBLE_EQ(d.median, 5.5);
  EXPECT_DOUBLE_EQ(d.p90, 9.1);
  EXPECT_NEAR(d.p99, 9.91, 1e-12);
  EXPECT_DOUBLE_EQ(d.mean, 5.5);
  // numpy.std(range(1, 11)) = sqrt(8.25)
  EXPECT_NEAR(d.std, std::sqrt(8.25), 1e-12);
  EXPECT_EQ(d.min, 1);
  EXPECT_EQ(d.max, 10);
  EXPECT_EQ(d.count, 10);
}

TEST(PercentileTest, MatchesSortReferenceOnRandomSamples) {
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> dist(3.0, 1.0);
  for (int n : {1, 2, 3, 17, 100, 1001}) {
    std::vector<double> v(n);
    for (double& x : v) x = dist(rng);
    Distribution d = Summarize(v);
    EXPECT_NEAR(d.median, RefPercentile(v, 50), 1e-9) << n;
    EXPECT_NEAR(d.p90, RefPercentile(v, 90), 1e-9) << n;
    EXPECT_NEAR(d.p99, RefPercentile(v, 99), 1e-9) << n;
    EXPECT_LE(d.min, d.median);
    EXPECT_LE(d.median, d.p90);
    EXPECT_LE(d.p90, d.p99);
    EXPECT_LE(d.p99, d.max);
  }
}

TEST(PercentileTest, NaNsAreLeftOutAndEmptyIsNaN) {
  Distribution d = Summarize({kNaN, 4.0, kNaN, 2.0});
  EXPECT_EQ(d.count, 2);
  EXPECT_DOUBLE_EQ(d.mean, 3.0);
  Distribution e = Summarize({kNaN});
  EXPECT_EQ(e.count, 0);
  EXPECT_TRUE(std::isnan(e.mean));
  EXPECT_TRUE(std::isnan(e.p99));
}

TEST(RequestMetricsTest, OneTokenPerMessage) {
  // Sent at 0; tokens at 100, 110, 130, 160 ms.
  RequestMetrics m =
      ComputeRequestMetrics({{100, 1}, {110, 1}, {130, 1}, {160, 1}});
  EXPECT_EQ(m.output_tokens, 4);
  EXPECT_DOUBLE_EQ(m.ttft_ms, 100);
  EXPECT_DOUBLE_EQ(m.e2e_ms, 160);
  EXPECT_DOUBLE_EQ(m.tpot_ms, (160.0 - 100.0) / 3);
  EXPECT_EQ(m.itl_ms, (std::vector<double>{10, 20, 30}));
}

TEST(RequestMetricsTest, MultiTokenMessagesAreOneGapThenZeros) {
  // A usage-only first message, then 2 tokens at 50, 3 at 80, 1 at 100.
  RequestMetrics m =
      ComputeRequestMetrics({{5, 0}, {50, 2}, {80, 3}, {100, 1}});
  EXPECT_EQ(m.output_tokens, 6);
  EXPECT_DOUBLE_EQ(m.ttft_ms, 50);
  EXPECT_DOUBLE_EQ(m.e2e_ms, 100);
  EXPECT_DOUBLE_EQ(m.tpot_ms, 50.0 / 5);
  EXPECT_EQ(m.itl_ms, (std::vector<double>{0, 30, 0, 0, 20}));
  // n - 1 values summing to last token time - TTFT.
  double sum = 0;
  for (double g : m.itl_ms) sum += g;
  EXPECT_DOUBLE_EQ(sum, 100 - 50);
}

TEST(RequestMetricsTest, TrailingEmptyMessageEndsTheRequest) {
  // The last message carries only the finish reason: E2E is its arrival.
  RequestMetrics m = ComputeRequestMetrics({{10, 1}, {20, 1}, {40, 0}});
  EXPECT_DOUBLE_EQ(m.e2e_ms, 40);
  EXPECT_DOUBLE_EQ(m.tpot_ms, 30.0);  // (40 - 10) / (2 - 1)
  EXPECT_EQ(m.itl_ms, (std::vector<double>{10}));
}

TEST(RequestMetricsTest, SingleTokenHasNoTpotAndNoMessagesNothing) {
  RequestMetrics one = ComputeRequestMetrics({{12, 1}});
  EXPECT_DOUBLE_EQ(one.ttft_ms, 12);
  EXPECT_TRUE(std::isnan(one.tpot_ms));
  EXPECT_TRUE(one.itl_ms.empty());
  RequestMetrics none = ComputeRequestMetrics({});
  EXPECT_EQ(none.output_tokens, 0);
  EXPECT_TRUE(std::isnan(none.ttft_ms));
  EXPECT_TRUE(std::isnan(none.e2e_ms));
}

TEST(SloTest, Parse) {
  absl::StatusOr<Slo> s = ParseSlo("ttft:200,tpot:15.5");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->ttft_ms, 200);
  EXPECT_EQ(s->tpot_ms, 15.5);
  EXPECT_EQ(s->e2e_ms, kInf);
  EXPECT_TRUE(s->any());
  EXPECT_EQ(ParseSlo("e2e:1000")->e2e_ms, 1000);
  EXPECT_FALSE(ParseSlo("ttft").ok());
  EXPECT_FALSE(ParseSlo("ttft:-1").ok());
  EXPECT_FALSE(ParseSlo("latency:5").ok());
  EXPECT_FALSE(ParseSlo("").ok());
  EXPECT_FALSE(Slo{}.any());
}

RequestRecord Req(double ttft, double step, int n, std::string status = "OK",
                  int prompt = 10) {
  RequestRecord r;
  r.status = std::move(status);
  r.prompt_tokens = prompt;
  if (r.status == "OK") {
    for (int i = 0; i < n; ++i) r.messages.push_back({ttft + i * step, 1});
  }
  r.metrics = ComputeRequestMetrics(r.messages);
  return r;
}

TEST(PhaseSummaryTest, GoodputThroughputAndErrors) {
  std::vector<RequestRecord> rs = {
      Req(100, 10, 5),  // TTFT 100, TPOT 10: meets both
      Req(300, 10, 5),  // TTFT misses
      Req(100, 30, 5),  // TPOT misses
      Req(150, 20, 1),  // one token: no TPOT, TTFT meets
      Req(0, 0, 0, "RESOURCE_EXHAUSTED"),
      Req(0, 0, 0, "RESOURCE_EXHAUSTED"),
      Req(0, 0, 0, "UNAVAILABLE"),
  };
  Slo slo;
  slo.ttft_ms = 200;
  slo.tpot_ms = 20;
  PhaseSummary s = SummarizePhase(rs, /*duration_s=*/2.0, slo);
  EXPECT_EQ(s.completed, 4);
  EXPECT_EQ(s.failed, 3);
  EXPECT_EQ(s.errors.at("RESOURCE_EXHAUSTED"), 2);
  EXPECT_EQ(s.errors.at("UNAVAILABLE"), 1);
  EXPECT_EQ(s.good_requests, 2);
  EXPECT_DOUBLE_EQ(s.goodput, 1.0);
  EXPECT_EQ(s.output_tokens, 16);
  EXPECT_EQ(s.input_tokens, 40);  // completed requests only
  EXPECT_DOUBLE_EQ(s.request_throughput, 2.0);
  EXPECT_DOUBLE_EQ(s.output_throughput, 8.0);
  EXPECT_DOUBLE_EQ(s.total_throughput, 28.0);
  EXPECT_EQ(s.ttft_ms.count, 4);
  EXPECT_EQ(s.tpot_ms.count, 3);  // the one-token request has none
  EXPECT_EQ(s.itl_ms.count, 12);  // 4 + 4 + 4 + 0
  EXPECT_DOUBLE_EQ(s.tpot_ms.median, 10);
  EXPECT_TRUE(s.has_slo);
  // An e2e bound alone: 100+40=140, 300+40=340, 100+120=220, 150.
  slo = Slo{};
  slo.e2e_ms = 200;
  EXPECT_EQ(SummarizePhase(rs, 2.0, slo).good_requests, 2);
}

}  // namespace
}  // namespace latentkv::bench
