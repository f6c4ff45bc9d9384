// The async client and the phase runner against a scripted in-process server
// (tools/bench/fake_server.h): what the client records matches the timeline
// the server follows, errors are counted by code, the concurrency bound, the
// arrival schedule and the duration limit hold, and a compare run yields one
// phase per target with JSON and a table.
#include "tools/bench/client.h"

#include <algorithm>

#include "gtest/gtest.h"
#include "tools/bench/fake_server.h"
#include "tools/bench/phase.h"
#include "tools/bench/report.h"
#include "tools/bench/serve_bench.h"

namespace latentkv::bench {
namespace {

using std::chrono::milliseconds;

PromptSource Synthetic() {
  PromptSource s;
  s.vocab_size = 512;
  return s;
}

absl::StatusOr<PhaseResult> RunAgainst(const std::string& address,
                                       const WorkloadOptions& w,
                                       const PhaseOptions& p,
                                       bool keep_token_ids = false) {
  ClientOptions co;
  co.address = address;
  co.keep_token_ids = keep_token_ids;
  StreamingClient client(co);
  const PromptSource s = Synthetic();
  Workload workload(w, &s);
  return RunPhase(client, workload, p);
}

TEST(ClientTest, RecordsTheServersTimeline) {
  FakeServerOptions fo;
  fo.tokens_per_message = 3;
  fo.first_delay = milliseconds(30);
  fo.interval = milliseconds(20);
  FakeGenerationServer server(fo);
  WorkloadOptions w;
  w.input_len = 7;
  w.output_len = 10;  // messages of 3, 3, 3, 1 tokens
  PhaseOptions p;
  p.num_requests = 3;
  p.progress = false;
  absl::StatusOr<PhaseResult> r = RunAgainst(server.address(), w, p, true);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->records.size(), 3u);
  for (const RequestRecord& rec : r->records) {
    ASSERT_TRUE(rec.ok()) << rec.status << " " << rec.error;
    EXPECT_EQ(rec.token_ids,
              (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
    ASSERT_EQ(rec.messages.size(), 4u);
    EXPECT_EQ(rec.finish_reason, "FINISH_REASON_LENGTH");
    EXPECT_EQ(rec.usage_prompt_tokens, 7);
    EXPECT_EQ(rec.usage_completion_tokens, 10);
    const RequestMetrics& m = rec.metrics;
    EXPECT_EQ(m.output_tokens, 10);
    EXPECT_GE(m.ttft_ms, 30);
    EXPECT_LT(m.ttft_ms, 2000);
    ASSERT_EQ(m.itl_ms.size(), 9u);
    for (int i : {0, 1, 3, 4, 6, 7}) EXPECT_EQ(m.itl_ms[i], 0.0) << i;
    // Message k leaves the server 30 + 20k ms after the call starts, so it
    // cannot arrive earlier; a single gap can be shorter than 20 ms (a late
    // delivery of the previous message), so bound arrival times, not gaps.
    double arrival = m.ttft_ms;
    for (int k = 1; k <= 3; ++k) {
      arrival += m.itl_ms[3 * k - 1];
      EXPECT_GE(arrival, 30 + 20 * k - 1.0) << "message " << k;
    }
    EXPECT_GE(m.e2e_ms, 30 + 3 * 20);
    EXPECT_NEAR(m.tpot_ms, (m.e2e_ms - m.ttft_ms) / 9, 1e-9);
  }
  EXPECT_EQ(server.requests(), 3);
}

TEST(ClientTest, ErrorsAreCountedByCode) {
  FakeServerOptions fo;
  fo.fail_every = 4;
  FakeGenerationServer server(fo);
  WorkloadOptions w;
  w.input_len = 4;
  w.output_len = 5;
  PhaseOptions p;
  p.num_requests = 20;
  p.concurrency = 1;  // arrival order = index order
  p.progress = false;
  absl::StatusOr<PhaseResult> r = RunAgainst(server.address(), w, p);
  ASSERT_TRUE(r.ok()) << r.status();
  PhaseSummary s = SummarizePhase(r->records, r->duration_s, Slo{});
  EXPECT_EQ(s.completed, 15);
  EXPECT_EQ(s.failed, 5);
  EXPECT_EQ(s.errors.at("RESOURCE_EXHAUSTED"), 5);
  EXPECT_EQ(s.output_tokens, 15 * 5);
  for (const RequestRecord& rec : r->records) {
    EXPECT_EQ(rec.ok(), (rec.index + 1) % 4 != 0) << rec.index;
  }
}

TEST(PhaseTest, ConcurrencyBoundHolds) {
  FakeServerOptions fo;
  fo.interval = milliseconds(10);
  FakeGenerationServer server(fo);
  WorkloadOptions w;
  w.input_len = 4;
  w.output_len = 5;  // ~40 ms a stream
  PhaseOptions p;
  p.num_requests = 16;
  p.concurrency = 4;
  p.progress = false;
  absl::StatusOr<PhaseResult> r = RunAgainst(server.address(), w, p);
  ASSERT_TRUE(r.ok()) << r.status();
  // At each send, count the streams sent earlier that had not ended.
  int most = 0;
  for (const RequestRecord& a : r->records) {
    int overlap = 0;
    for (const RequestRecord& b : r->records) {
      const double end = b.sent_s + b.metrics.e2e_ms / 1000;
      if (b.sent_s <= a.sent_s && end > a.sent_s) ++overlap;
    }
    most = std::max(most, overlap);
  }
  EXPECT_LE(most, 4);
  EXPECT_GE(most, 2);
  // All arrived at t=0; the last 12 had to wait for a slot.
  EXPECT_GT(r->records.back().sent_s, 0.05);
}

TEST(PhaseTest, RequestsAreSentOnScheduleAndDurationStopsSending) {
  FakeGenerationServer server(FakeServerOptions{});
  WorkloadOptions w;
  w.input_len = 4;
  w.output_len = 2;
  w.request_rate = 40;
  w.seed = 3;
  PhaseOptions p;
  p.num_requests = 0;
  p.duration_s = 0.5;
  p.progress = false;
  absl::StatusOr<PhaseResult> r = RunAgainst(server.address(), w, p);
  ASSERT_TRUE(r.ok()) << r.status();
  // The same seed's arrival times below 0.5 s.
  ArrivalProcess arrivals(40, 1.0, 3);
  int expected = 0;
  while (arrivals.Next() < 0.5) ++expected;
  EXPECT_EQ(static_cast<int>(r->records.size()), expected);
  for (const RequestRecord& rec : r->records) {
    EXPECT_TRUE(rec.ok());
    EXPECT_LT(rec.sent_s, 0.5);
    EXPECT_GE(rec.sent_s, rec.scheduled_s);
    EXPECT_LT(rec.sent_s - rec.scheduled_s, 0.1) << rec.index;
  }
}

TEST(ServeBenchTest, CompareRunsTheSameWorkloadPerTarget) {
  FakeGenerationServer server(FakeServerOptions{});
  ServeBenchOptions o;
  o.targets = {*ParseTarget("a=" + server.address()),
               *ParseTarget("b=" + server.address() + ",kv_cache_mode=full")};
  o.rates = *ParseRates("100,inf");
  o.num_requests = 6;
  o.workload.input_len = 5;
  o.workload.output_len = 3;
  o.workload.output_len_range = 0.5;
  o.workload.prefix_groups = 2;  // prompts: a 4-token prefix + 5 tokens
  o.workload.prefix_len = 4;
  o.progress = false;
  absl::StatusOr<std::vector<PhaseReport>> r = RunServeBench(o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 4u);
  // Rate-major: a and b at 100 req/s, then a and b at inf.
  EXPECT_EQ((*r)[0].target.label, "a");
  EXPECT_EQ((*r)[1].target.label, "b");
  EXPECT_EQ((*r)[1].request_rate, 100);
  EXPECT_EQ((*r)[2].target.label, "a");
  EXPECT_EQ((*r)[2].request_rate, kInf);
  EXPECT_EQ((*r)[3].target.kv_cache_mode, latentkv::v1::KV_CACHE_MODE_FULL);
  for (const PhaseReport& p : *r) {
    EXPECT_EQ(p.summary.completed, 6);
    ASSERT_EQ(p.records.size(), 6u);
    for (size_t i = 0; i < 6; ++i) {
      // Same seed, same lengths in every phase.
      EXPECT_EQ(p.records[i].max_tokens, (*r)[0].records[i].max_tokens);
      EXPECT_EQ(p.records[i].metrics.output_tokens, p.records[i].max_tokens);
      EXPECT_EQ(p.records[i].prompt_tokens, 9);
    }
  }
  const nlohmann::json j = ToJson(o, *r);
  EXPECT_EQ(j["phases"].size(), 4u);
  EXPECT_TRUE(j["phases"][2]["request_rate"].is_null());  // inf
  EXPECT_EQ(j["phases"][0]["summary"]["completed"], 6);
  EXPECT_EQ(j["config"]["prefix_groups"], 2);
  EXPECT_EQ(j["config"]["prefix_len"], 4);
  const std::string table = FormatTable(*r);
  EXPECT_NE(table.find("a rate=100"), std::string::npos) << table;
  EXPECT_NE(table.find("b rate=inf"), std::string::npos) << table;
  EXPECT_NE(table.find("Median TTFT (ms):"), std::string::npos) << table;
}

TEST(ServeBenchTest, ParsesTargetsAndRates) {
  absl::StatusOr<Target> t =
      ParseTarget("kvl=127.0.0.1:9000,kv_cache_mode=compressed");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->label, "kvl");
  EXPECT_EQ(t->address, "127.0.0.1:9000");
  EXPECT_EQ(t->kv_cache_mode, latentkv::v1::KV_CACHE_MODE_COMPRESSED);
  EXPECT_FALSE(ParseTarget("127.0.0.1:9000").ok());
  EXPECT_FALSE(ParseTarget("x=h:1,kv_cache_mode=half").ok());
  EXPECT_FALSE(ParseTarget("x=h:1,mode=full").ok());
  absl::StatusOr<std::vector<double>> rates = ParseRates("1,2.5,inf");
  ASSERT_TRUE(rates.ok());
  EXPECT_EQ(*rates, (std::vector<double>{1, 2.5, kInf}));
  EXPECT_FALSE(ParseRates("1,0").ok());
  EXPECT_FALSE(ParseRates("fast").ok());
}

}  // namespace
}  // namespace latentkv::bench
