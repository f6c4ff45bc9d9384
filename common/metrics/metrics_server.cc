#include "common/metrics/metrics_server.h"

#include <sys/socket.h>

#include <chrono>
#include <exception>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/http/bounded_task_queue.h"
#include "common/metrics/listen_socket.h"
#include "httplib.h"
#include "prometheus/text_serializer.h"

namespace latentkv::metrics {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::StartIfEnabled(
    const std::string& host, int port) {
  if (port == 0) return std::unique_ptr<MetricsServer>();
  MetricsServerOptions o;
  o.host = host;
  o.port = port;
  return Start(o);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const MetricsServerOptions& options) {
  if (options.port <= 0 || options.port > 65535 || options.threads < 1 ||
      options.read_timeout_s < 1 || options.max_queued < 0 ||
      options.listen_backlog < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics server: port ", options.port, " (1..65535), ",
                     options.threads, " threads (>= 1) and a read timeout of ",
                     options.read_timeout_s, " s (>= 1)"));
  }
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->registry_ = std::make_shared<prometheus::Registry>();
  s->http_ = std::make_unique<httplib::Server>();
  httplib::Server& http = *s->http_;
  const size_t threads = static_cast<size_t>(options.threads);
  // Bounded: a flood of connections cannot queue without end; beyond
  // max_queued they get a 503 at once.
  const int max_queued = options.max_queued;
  http.new_task_queue = [threads, max_queued] {
    return new http::BoundedTaskQueue(static_cast<int>(threads), max_queued);
  };
  http.set_read_timeout(options.read_timeout_s, 0);
  http.set_keep_alive_timeout(options.read_timeout_s);
  http.set_payload_max_length(4096);  // a scrape carries no body
  // The listening socket, captured to deepen its accept queue below.
  auto listen_fd = std::make_shared<int>(-1);
  http.set_socket_options([listen_fd](int fd) {
    ExclusiveListenOptions(fd);
    *listen_fd = fd;
  });
  MetricsServer* self = s.get();
  http.Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
    if (http::BoundedTaskQueue::Overloaded()) {
      res.status = 503;
      res.set_header("Retry-After", "1");
      res.set_content("metrics endpoint overloaded\n", "text/plain");
      return;
    }
    res.set_content(self->ScrapeText(), "text/plain; version=0.0.4");
  });
  if (!http.bind_to_port(options.host, options.port)) {
    return absl::UnavailableError(absl::StrCat(
        "metrics server cannot listen on ", options.host, ":", options.port));
  }
  // httplib 0.11 listens with a backlog of 5: bursts of scrapers (or a
  // flood) would see dropped SYNs and second-long retries.
  if (*listen_fd >= 0) listen(*listen_fd, options.listen_backlog);
  s->port_ = options.port;
  s->listener_ = std::thread([self] { self->http_->listen_after_bind(); });
  // stop() before the listener runs would not stop it: wait for it.
  while (!http.is_running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return s;
}

std::unique_ptr<MetricsServer> MetricsServer::WithoutEndpoint() {
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->registry_ = std::make_shared<prometheus::Registry>();
  return s;
}

std::string MetricsServer::ScrapeText() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& c : owned_) {
      std::vector<prometheus::MetricFamily> more = c->Collect();
      families.insert(families.end(), std::make_move_iterator(more.begin()),
                      std::make_move_iterator(more.end()));
    }
  }
  return prometheus::TextSerializer().Serialize(families);
}

MetricsServer::~MetricsServer() {
  // Stops scrapes (and joins their threads) before the collectables go.
  if (http_ != nullptr) http_->stop();
  if (listener_.joinable()) listener_.join();
}

void MetricsServer::Add(std::shared_ptr<prometheus::Collectable> collectable) {
  std::lock_guard<std::mutex> lock(mu_);
  owned_.push_back(std::move(collectable));
}

namespace {

prometheus::MetricFamily Family(std::string name, std::string help,
                                prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

}  // namespace

prometheus::MetricFamily GaugeFamily(std::string name, std::string help) {
  return Family(std::move(name), std::move(help),
                prometheus::MetricType::Gauge);
}

prometheus::MetricFamily CounterFamily(std::string name, std::string help) {
  return Family(std::move(name), std::move(help),
                prometheus::MetricType::Counter);
}

void AddSample(prometheus::MetricFamily& family, double value,
               const Labels& labels) {
  prometheus::ClientMetric m;
  for (const auto& [k, v] : labels) m.label.push_back({k, v});
  if (family.type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  family.metric.push_back(std::move(m));
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

std::vector<double> LatencyBuckets() {
  return ExponentialBuckets(0.001, 2.0, 17);
}

}  // namespace latentkv::metrics
