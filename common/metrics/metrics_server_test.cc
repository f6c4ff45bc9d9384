#include "common/metrics/metrics_server.h"

#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "httplib.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"

namespace latentkv::metrics {
namespace {

// A port that was free a moment ago.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

TEST(MetricsServerTest, ServesRegistryAndCollectables) {
  MetricsServerOptions o;
  o.port = FreePort();
  auto server = MetricsServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->port(), o.port);
  auto& hist = prometheus::BuildHistogram()
                   .Name("test_latency_seconds")
                   .Help("h")
                   .Register((*server)->registry())
                   .Add({}, std::vector<double>{0.1, 1.0});
  hist.Observe(0.05);
  hist.Observe(0.5);
  int scrapes = 0;
  (*server)->Add(std::make_shared<FunctionCollectable>([&scrapes] {
    ++scrapes;
    auto g = GaugeFamily("test_depth", "a gauge");
    AddSample(g, 3, {{"worker", "w0"}});
    auto c = CounterFamily("test_things_total", "a counter");
    AddSample(c, 7);
    return std::vector<prometheus::MetricFamily>{g, c};
  }));
  httplib::Client cli("127.0.0.1", o.port);
  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  const std::string& body = res->body;
  EXPECT_NE(body.find("test_depth{worker=\"w0\"} 3"), std::string::npos)
      << body;
  EXPECT_NE(body.find("# TYPE test_things_total counter"), std::string::npos);
  EXPECT_NE(body.find("test_things_total 7"), std::string::npos);
  EXPECT_NE(body.find("test_latency_seconds_bucket{le=\"0.1\"} 1"),
            std::string::npos);
  EXPECT_NE(body.find("test_latency_seconds_bucket{le=\"1\"} 2"),
            std::string::npos);
  EXPECT_NE(body.find("test_latency_seconds_count 2"), std::string::npos);
  EXPECT_EQ(scrapes, 1);
}

// A scrape runs the collectables on the server's threads, which must have
// a full-size stack: the worker's libraries take ~80 KB of static TLS from
// every thread's stack, and civetweb's fixed ~100 KB stacks overflowed.
TEST(MetricsServerTest, ScrapesRunOnFullSizeStacks) {
  MetricsServerOptions o;
  o.port = FreePort();
  auto server = MetricsServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->Add(std::make_shared<FunctionCollectable>([] {
    volatile char deep[1 << 20];  // 1 MiB of this thread's stack
    for (size_t i = 0; i < sizeof(deep); i += 4096) deep[i] = 1;
    auto g = GaugeFamily("test_deep", "stack touched");
    AddSample(g, deep[4096]);
    return std::vector<prometheus::MetricFamily>{g};
  }));
  httplib::Client cli("127.0.0.1", o.port);
  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_NE(res->body.find("test_deep 1"), std::string::npos) << res->body;
  auto other = cli.Get("/");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
}

int EntriesOf(const char* dir) {
  int n = 0;
  if (DIR* d = opendir(dir)) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

// A flood of idle connections holds no thread and no accepted connection
// beyond the configured bound (httplib's own pool accepted and queued every
// one: 40 server-side sockets here), and once the clients go, scrapes are
// answered again.
TEST(MetricsServerTest, ConnectionFloodIsBounded) {
  MetricsServerOptions o;
  o.port = FreePort();
  o.threads = 1;
  o.max_queued = 2;
  o.read_timeout_s = 2;
  auto server = MetricsServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  const int threads_before = EntriesOf("/proc/self/task");
  const int fds_before = EntriesOf("/proc/self/fd");
  std::vector<int> idle;
  for (int i = 0; i < 40; ++i) {
    // Non-blocking: past the listen backlog a connect would wait on SYN
    // retries.
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(o.port);
    const int rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ASSERT_TRUE(rc == 0 || errno == EINPROGRESS) << errno;
    idle.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(EntriesOf("/proc/self/task"), threads_before);
  // Server-side sockets: 1 serving + 2 queued + the overflow thread's 1 + 2,
  // and the one the accepting thread serves itself.
  const int accepted = EntriesOf("/proc/self/fd") - fds_before - 40;
  EXPECT_LE(accepted, 7);
  for (int fd : idle) close(fd);
  httplib::Client cli("127.0.0.1", o.port);
  cli.set_read_timeout(30, 0);
  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_TRUE(res->status == 200 || res->status == 503) << res->status;
  // Once the backlog has drained, a scrape is a plain 200.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  res = cli.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(MetricsServerTest, BusyPortIsUnavailable) {
  MetricsServerOptions o;
  o.port = FreePort();
  auto first = MetricsServer::Start(o);
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::Start(o);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  o.port = 0;
  EXPECT_EQ(MetricsServer::Start(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsServerTest, ExponentialBuckets) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  const auto b = LatencyBuckets();
  ASSERT_FALSE(b.empty());
  EXPECT_DOUBLE_EQ(b.front(), 0.001);
  EXPECT_GT(b.back(), 60.0);
}

}  // namespace
}  // namespace latentkv::metrics
