// Operations over real processes: Prometheus /metrics of the coordinator,
// a worker and the kvstore scraped over HTTP and parsed (histogram counts
// equal the requests made, buckets monotone, gauges and counters sane), and
// the grpc.health.v1 "liveness"/"readiness" services of all three, through
// registration and draining; `latentkv serve` passing its ports on.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster.h"
#include "tests/integration/metrics_scrape.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;
using HealthStatus = ::grpc::health::v1::HealthCheckResponse;

// Checks a histogram's buckets: cumulative counts non-decreasing in `le`,
// the +Inf bucket equal to _count; returns _count.
double CheckHistogram(const std::vector<Sample>& s, const std::string& name) {
  std::vector<std::pair<double, double>> buckets;  // (le, count)
  for (const Sample& x : s) {
    if (x.name == name + "_bucket") {
      buckets.emplace_back(
          x.labels.at("le") == "+Inf"
              ? INFINITY
              : std::strtod(x.labels.at("le").c_str(), nullptr),
          x.value);
    }
  }
  EXPECT_GE(buckets.size(), 2u) << name;
  std::sort(buckets.begin(), buckets.end());
  for (size_t i = 1; i < buckets.size(); ++i) {
    EXPECT_GE(buckets[i].second, buckets[i - 1].second)
        << name << " bucket le=" << buckets[i].first;
  }
  const double count = Get(s, name + "_count");
  EXPECT_FALSE(buckets.empty() || !std::isinf(buckets.back().first)) << name;
  if (!buckets.empty()) {
    EXPECT_EQ(buckets.back().second, count) << name;
  }
  EXPECT_GE(Get(s, name + "_sum"), 0.0) << name;
  return count;
}

class MetricsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir());
    store_metrics_port_ = PickFreePort();
    store_ =
        new Process({BinDir() + "/latentkv-kvstore", "--port=0",
                     "--port_file=" + *dir_ + "/kvstore.addr",
                     "--metrics_port=" + std::to_string(store_metrics_port_)},
                    *dir_ + "/kvstore.log");
    const std::string store = WaitForLine(*dir_ + "/kvstore.addr", 30);
    ASSERT_FALSE(store.empty());
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    o.http = true;
    o.metrics = true;
    o.worker_args = {"--kvstore=" + store};
    cluster_ = new Cluster(o);
  }
  static void TearDownTestSuite() {
    delete cluster_;
    store_->Stop(SIGTERM, 20);
    delete store_;
    delete dir_;
  }
  static Cluster* cluster_;
  static Process* store_;
  static std::string* dir_;
  static int store_metrics_port_;
};
Cluster* MetricsTest::cluster_ = nullptr;
Process* MetricsTest::store_ = nullptr;
std::string* MetricsTest::dir_ = nullptr;
int MetricsTest::store_metrics_port_ = 0;

TEST_F(MetricsTest, HistogramsCountTheRequestsAndGaugesAreSane) {
  // 4 gRPC and 2 HTTP requests (the same prompt of more than one KV page
  // twice: a prefix hit), all ending OK with 20 tokens; 1 invalid request.
  const std::string long_prompt =
      "Once upon a time, there was a little girl named Lily. She loved to "
      "play outside in the park.";
  const std::vector<std::string> prompts = {long_prompt, "The little dog",
                                            long_prompt, "Mom said"};
  int64_t tokens = 0;
  for (const std::string& p : prompts) {
    pb::GenerateRequest req = Greedy(p, 20);
    req.mutable_sampling()->set_ignore_eos(true);
    StreamResult r = Generate(cluster_->stub(), req);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    tokens += static_cast<int64_t>(r.tokens.size());
  }
  for (int i = 0; i < 2; ++i) {
    int code = -1;
    const std::string out = RunCommand(
        {"curl", "-sS", "--max-time", "30",
         "http://127.0.0.1:" + std::to_string(cluster_->http_port()) +
             "/v1/completions",
         "-d",
         std::string(R"({"prompt":"In the park","max_tokens":20,)") +
             R"("ignore_eos":true,"stream":)" + (i ? "true" : "false") + "}"},
        &code);
    ASSERT_EQ(code, 0) << out;
    ASSERT_EQ(out.find("\"error\""), std::string::npos) << out;
    tokens += 20;
  }
  const int ok = static_cast<int>(prompts.size()) + 2;
  StreamResult bad = Generate(cluster_->stub(), Greedy("", 5));
  ASSERT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  const auto c = Scrape(cluster_->coordinator_metrics_port());
  EXPECT_EQ(Get(c, "latentkv_coordinator_requests_total", {{"outcome", "ok"}}),
            ok);
  EXPECT_EQ(Get(c, "latentkv_coordinator_requests_total",
                {{"outcome", "invalid_argument"}}),
            1);
  EXPECT_EQ(
      Get(c, "latentkv_coordinator_requests_total", {{"outcome", "cancelled"}}),
      0);
  EXPECT_EQ(CheckHistogram(c, "latentkv_coordinator_e2e_seconds"), ok);
  EXPECT_EQ(CheckHistogram(c, "latentkv_coordinator_ttft_seconds"), ok);
  EXPECT_EQ(CheckHistogram(c, "latentkv_coordinator_tpot_seconds"), ok);
  EXPECT_EQ(CheckHistogram(c, "latentkv_coordinator_itl_seconds"),
            tokens - ok);  // one per token after the first
  EXPECT_GE(Get(c, "latentkv_coordinator_e2e_seconds_sum"),
            Get(c, "latentkv_coordinator_ttft_seconds_sum"));
  EXPECT_EQ(Get(c, "latentkv_coordinator_generated_tokens_total"), tokens);
  EXPECT_EQ(Get(c, "latentkv_coordinator_queue_depth"), 0);
  EXPECT_EQ(Get(c, "latentkv_coordinator_worker_inflight",
                {{"worker", "w0"}, {"role", "mixed"}}),
            0);
  EXPECT_EQ(Get(c, "latentkv_coordinator_workers", {{"role", "mixed"}}), 1);

  // The worker: its snapshot is refreshed after each step; wait for it.
  std::vector<Sample> w;
  for (int i = 0; i < 100; ++i) {
    w = Scrape(cluster_->worker_metrics_port(0));
    if (Get(w, "latentkv_worker_steps_total") ==
            Get(w, "latentkv_worker_step_seconds_count") &&
        Get(w, "latentkv_worker_kvstore_published_blocks_total") > 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double steps = CheckHistogram(w, "latentkv_worker_step_seconds");
  EXPECT_GE(steps, 20);  // at least one step per token of one request
  EXPECT_EQ(Get(w, "latentkv_worker_steps_total"), steps);
  EXPECT_EQ(Get(w, "latentkv_worker_running_sequences"), 0);
  EXPECT_EQ(Get(w, "latentkv_worker_waiting_sequences"), 0);
  EXPECT_GE(Get(w, "latentkv_worker_generated_tokens_total"), tokens);
  const double cap =
      Get(w, "latentkv_worker_kv_pages_capacity", {{"tier", "device"}});
  EXPECT_GT(cap, 0);
  EXPECT_LE(Get(w, "latentkv_worker_kv_pages_in_use", {{"tier", "device"}}),
            cap);
  EXPECT_GT(Get(w, "latentkv_worker_kv_bytes_capacity", {{"tier", "device"}}),
            0);
  double layer_pages = 0;
  for (int l = 0; l < 5; ++l) {  // stories260K has 5 layers
    const double p = Get(w, "latentkv_worker_kv_layer_pages_in_use",
                         {{"layer", std::to_string(l)}});
    ASSERT_FALSE(std::isnan(p)) << "layer " << l;
    EXPECT_FALSE(std::isnan(Get(w, "latentkv_worker_kv_layer_bytes_in_use",
                                {{"layer", std::to_string(l)}})));
    layer_pages += p;
  }
  EXPECT_EQ(layer_pages,
            Get(w, "latentkv_worker_kv_pages_in_use", {{"tier", "device"}}));
  EXPECT_GT(Get(w, "latentkv_worker_prefix_lookup_tokens_total"), 0);
  EXPECT_GT(Get(w, "latentkv_worker_prefix_hit_tokens_total"), 0)
      << "the repeated prompt should hit the prefix cache";
  const double ratio = Get(w, "latentkv_worker_prefix_hit_ratio");
  EXPECT_GT(ratio, 0);
  EXPECT_LE(ratio, 1);
  EXPECT_EQ(Get(w, "latentkv_worker_preemptions_total"), 0);
  EXPECT_GT(Get(w, "latentkv_worker_kvstore_published_blocks_total"), 0);
  EXPECT_EQ(Get(w, "latentkv_worker_kv_transfer_bytes_total"), 0);

  // The store holds what the worker published.
  const auto s = Scrape(store_metrics_port_);
  const double blocks = Get(s, "latentkv_kvstore_blocks");
  EXPECT_GT(blocks, 0);
  EXPECT_EQ(Get(s, "latentkv_kvstore_stored_blocks_total") -
                Get(s, "latentkv_kvstore_evicted_blocks_total"),
            blocks);
  EXPECT_GT(Get(s, "latentkv_kvstore_bytes"), 0);
  EXPECT_LE(Get(s, "latentkv_kvstore_bytes"),
            Get(s, "latentkv_kvstore_capacity_bytes"));
  for (const char* call : {"lookup", "get"}) {
    EXPECT_GE(Get(s, "latentkv_kvstore_hit_blocks_total", {{"call", call}}), 0);
    EXPECT_GE(Get(s, "latentkv_kvstore_miss_blocks_total", {{"call", call}}),
              0);
  }
  EXPECT_GT(Get(s, "latentkv_kvstore_miss_blocks_total", {{"call", "lookup"}}),
            0)
      << "the first prompts were looked up before anything was stored";
}

// ---- grpc.health.v1 ----

HealthStatus::ServingStatus Check(const std::string& address,
                                  const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  HealthStatus resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  EXPECT_TRUE(st.ok()) << service << ": " << st.error_message();
  return resp.status();
}

bool WaitFor(const std::string& address, const std::string& service,
             HealthStatus::ServingStatus want) {
  for (int i = 0; i < 200; ++i) {
    if (Check(address, service) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

TEST(HealthTest, ReadinessFollowsRegistrationAndDrainingEndsLiveness) {
  const std::string dir = MakeTempDir();
  const std::string model = Stories260kDir();
  const int coord_port = PickFreePort();
  const std::string coord_addr = "127.0.0.1:" + std::to_string(coord_port);
  const int internal_port = PickFreePort();
  const std::string internal_addr =
      "127.0.0.1:" + std::to_string(internal_port);
  // The worker starts first: nothing to register with yet.
  Process worker({BinDir() + "/latentkv-worker", "--model=" + model, "--port=0",
                  "--port_file=" + dir + "/w.addr",
                  "--coordinator=" + internal_addr, "--worker_id=w0"},
                 dir + "/w.log");
  const std::string waddr = WaitForLine(dir + "/w.addr", 60);
  ASSERT_FALSE(waddr.empty());
  EXPECT_EQ(Check(waddr, "liveness"), HealthStatus::SERVING);
  EXPECT_EQ(Check(waddr, "readiness"), HealthStatus::NOT_SERVING);
  EXPECT_EQ(Check(waddr, ""), HealthStatus::NOT_SERVING);

  // The coordinator, with the worker frozen so nothing registers yet.
  ASSERT_EQ(kill(worker.pid(), SIGSTOP), 0);
  Process coord(
      {BinDir() + "/latentkv-coordinator", "--model=" + model,
       "--port=" + std::to_string(coord_port), "--port_file=" + dir + "/c.addr",
       "--internal_port=" + std::to_string(internal_port),
       "--drain_seconds=20"},
      dir + "/c.log");
  ASSERT_EQ(WaitForLine(dir + "/c.addr", 30), coord_addr);
  EXPECT_EQ(Check(coord_addr, "liveness"), HealthStatus::SERVING);
  EXPECT_EQ(Check(coord_addr, "readiness"), HealthStatus::NOT_SERVING);
  EXPECT_EQ(Check(coord_addr, ""), HealthStatus::NOT_SERVING);
  ASSERT_EQ(kill(worker.pid(), SIGCONT), 0);
  EXPECT_TRUE(WaitFor(waddr, "readiness", HealthStatus::SERVING));
  EXPECT_TRUE(WaitFor(coord_addr, "readiness", HealthStatus::SERVING));
  EXPECT_EQ(Check(coord_addr, ""), HealthStatus::SERVING);
  EXPECT_EQ(Check(waddr, ""), HealthStatus::SERVING);

  // Draining: a request in flight (its worker frozen) holds the coordinator
  // in its drain, where both services say NOT_SERVING.
  auto gen = pb::Generation::NewStub(
      grpc::CreateChannel(coord_addr, grpc::InsecureChannelCredentials()));
  ASSERT_EQ(kill(worker.pid(), SIGSTOP), 0);
  grpc::ClientContext ctx;
  auto reader = gen->Generate(&ctx, Greedy("Once upon a time", 10));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(kill(coord.pid(), SIGTERM), 0);
  EXPECT_TRUE(WaitFor(coord_addr, "liveness", HealthStatus::NOT_SERVING));
  EXPECT_EQ(Check(coord_addr, "readiness"), HealthStatus::NOT_SERVING);
  ASSERT_EQ(kill(worker.pid(), SIGCONT), 0);
  pb::GenerateResponse resp;
  int got = 0;
  while (reader->Read(&resp)) got += resp.token_ids_size();
  EXPECT_TRUE(reader->Finish().ok()) << "the drain finishes what is in flight";
  EXPECT_EQ(got, 10);
  gen.reset();
  // Signal 0: wait for the exit the first SIGTERM started (a second one
  // could reach a thread that does not block it).
  EXPECT_EQ(coord.Stop(0, 30), 0);

  // The worker's liveness, watched, turns NOT_SERVING when it drains.
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(waddr, grpc::InsecureChannelCredentials()));
  grpc::ClientContext wctx;
  grpc::health::v1::HealthCheckRequest wreq;
  wreq.set_service("liveness");
  auto watch = health->Watch(&wctx, wreq);
  HealthStatus w;
  ASSERT_TRUE(watch->Read(&w));
  EXPECT_EQ(w.status(), HealthStatus::SERVING);
  ASSERT_EQ(kill(worker.pid(), SIGTERM), 0);
  bool not_serving = false;
  while (!not_serving && watch->Read(&w)) {
    not_serving = w.status() == HealthStatus::NOT_SERVING;
  }
  EXPECT_TRUE(not_serving);
  wctx.TryCancel();
  watch->Finish();
  watch.reset();
  health.reset();  // an open channel would hold up the server's shutdown
  EXPECT_EQ(worker.Stop(0, 30), 0);

  // The kvstore is ready once it listens.
  Process store({BinDir() + "/latentkv-kvstore", "--port=0",
                 "--port_file=" + dir + "/s.addr"},
                dir + "/s.log");
  const std::string saddr = WaitForLine(dir + "/s.addr", 30);
  ASSERT_FALSE(saddr.empty());
  for (const char* service : {"liveness", "readiness", ""}) {
    EXPECT_EQ(Check(saddr, service), HealthStatus::SERVING) << service;
  }
  EXPECT_EQ(store.Stop(SIGTERM, 20), 0);
}

// `latentkv serve --http-port --metrics-port`: the coordinator's HTTP API and
// metrics, and the worker's metrics on the next port.
TEST(ServeOpsTest, ServePassesHttpAndMetricsPorts) {
  int metrics = PickFreePort();
  while (!PortBindable(metrics + 1)) metrics = PickFreePort();
  const int http = PickFreePort();
  const std::string dir = MakeTempDir();
  Process serve({BinDir() + "/latentkv", "serve", "--model=" + Stories260kDir(),
                 "--port=0", "--port-file=" + dir + "/serve.addr",
                 "--http-port=" + std::to_string(http),
                 "--metrics-port=" + std::to_string(metrics)},
                dir + "/serve.log");
  ASSERT_FALSE(WaitForLine(dir + "/serve.addr", 120).empty());
  int code = -1;
  const std::string out = RunCommand(
      {"curl", "-sS", "--max-time", "30",
       "http://127.0.0.1:" + std::to_string(http) + "/v1/completions", "-d",
       R"({"prompt":"Once upon a time","max_tokens":8,"ignore_eos":true})"},
      &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"text_completion\""), std::string::npos) << out;
  const auto c = Scrape(metrics);
  EXPECT_EQ(Get(c, "latentkv_coordinator_requests_total", {{"outcome", "ok"}}),
            1);
  EXPECT_EQ(Get(c, "latentkv_coordinator_workers", {{"role", "mixed"}}), 1);
  const auto w = Scrape(metrics + 1);
  EXPECT_GE(Get(w, "latentkv_worker_generated_tokens_total"), 8);
  EXPECT_EQ(serve.Stop(SIGINT, 90), 0);
}

}  // namespace
}  // namespace latentkv::testing
