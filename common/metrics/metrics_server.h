// Prometheus exposition for latentkv's processes: one HTTP endpoint serving
// GET /metrics in the text format (cpp-httplib, prometheus-cpp's Registry
// and TextSerializer), over a Registry for metrics that code updates as it
// runs (counters, histograms) and Collectables read on every scrape (gauges
// and counters taken from a stats snapshot, so the serving paths carry no
// extra locks). Helpers build such scrape-time families.
//
// Why not prometheus-cpp's Exposer: it serves through civetweb, whose
// threads get a fixed ~100 KB stack. glibc carves every library's static TLS
// out of each thread's stack (OpenBLAS alone holds 60 KB, NCCL 12 KB), so in
// the worker a scrape overflowed that stack and killed the process (SIGSEGV
// in civetweb, seen in ServeOpsTest and in CI). httplib's threads are
// std::threads with the process's default stack.
//
// Thread-safety: MetricsServer's methods are thread-safe; scrapes run on the
// server's own threads and call Collect() concurrently with the process.
#ifndef LATENTKV_COMMON_METRICS_METRICS_SERVER_H_
#define LATENTKV_COMMON_METRICS_METRICS_SERVER_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace latentkv::metrics {

struct MetricsServerOptions {
  // Address to bind; default loopback (pass 0.0.0.0 to be scraped from
  // elsewhere).
  std::string host = "127.0.0.1";
  // TCP port, > 0 (the mains treat --metrics_port=0 as "no endpoint").
  int port = 0;
  // Threads answering scrapes; >= 1, default 2.
  int threads = 2;
  // Seconds a connection may take to send its request, and to stay idle
  // between requests; bounds what a slow or idle client holds.
  int read_timeout_s = 5;
  // Connections waiting for a thread at most; more get a 503 at once (the
  // connection queue is bounded: common/http/bounded_task_queue.h). >= 0.
  int max_queued = 8;
  // Accept queue of the listening socket (connections the kernel completes
  // before the server accepts them). >= 1.
  int listen_backlog = 128;
};

class MetricsServer {
 public:
  // Binds and starts serving /metrics; UNAVAILABLE when the port cannot be
  // bound, INVALID_ARGUMENT for options outside their ranges.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const MetricsServerOptions& options);
  // What every main does with --host and --metrics_port: null for port 0
  // (no endpoint), else Start() with default threads.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> StartIfEnabled(
      const std::string& host, int port);
  // A server with no endpoint: its registry and collectables are read only
  // through ScrapeText (the coordinator's /metrics on its API port when
  // --metrics_port is off).
  static std::unique_ptr<MetricsServer> WithoutEndpoint();
  ~MetricsServer();

  // The text exposition of everything registered: what a scrape returns.
  std::string ScrapeText() const;

  // The registry for metrics updated as the process runs.
  prometheus::Registry& registry() { return *registry_; }
  // Adds a collectable read on every scrape; the server keeps it alive.
  void Add(std::shared_ptr<prometheus::Collectable> collectable);
  // The bound port (0 without an endpoint).
  int port() const { return port_; }

 private:
  MetricsServer() = default;

  std::unique_ptr<httplib::Server> http_;  // null without an endpoint
  std::thread listener_;
  std::shared_ptr<prometheus::Registry> registry_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<prometheus::Collectable>> owned_;  // guarded
  int port_ = 0;
};

// A Collectable that calls `collect` on every scrape.
class FunctionCollectable : public prometheus::Collectable {
 public:
  explicit FunctionCollectable(
      std::function<std::vector<prometheus::MetricFamily>()> collect)
      : collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    return collect_();
  }

 private:
  std::function<std::vector<prometheus::MetricFamily>()> collect_;
};

using Labels = std::map<std::string, std::string>;

// An empty family of the given type (add samples with AddSample). Names
// follow Prometheus conventions: counters end in _total, units in the name
// (_seconds, _bytes).
prometheus::MetricFamily GaugeFamily(std::string name, std::string help);
prometheus::MetricFamily CounterFamily(std::string name, std::string help);
// Appends one sample to a gauge or counter family.
void AddSample(prometheus::MetricFamily& family, double value,
               const Labels& labels = {});

// Histogram bucket upper bounds start, start*factor, ... (count of them);
// start > 0, factor > 1, count >= 1.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Buckets for request latencies in seconds: 1 ms .. ~65 s (x2 steps).
std::vector<double> LatencyBuckets();

}  // namespace latentkv::metrics

#endif  // LATENTKV_COMMON_METRICS_METRICS_SERVER_H_
