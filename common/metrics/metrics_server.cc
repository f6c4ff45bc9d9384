#include "common/metrics/metrics_server.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
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
  if (options.port <= 0 || options.port > 65535 || options.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics server: port ", options.port, " (1..65535) and ",
                     options.threads, " threads (>= 1)"));
  }
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  const std::string bind = absl::StrCat(options.host, ":", options.port);
  try {
    s->exposer_ = std::make_unique<prometheus::Exposer>(
        bind, static_cast<size_t>(options.threads));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics server cannot listen on ", bind, ": ", e.what()));
  }
  const std::vector<int> ports = s->exposer_->GetListeningPorts();
  s->port_ = ports.empty() ? options.port : ports[0];
  s->registry_ = std::make_shared<prometheus::Registry>();
  s->exposer_->RegisterCollectable(s->registry_);
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
  exposer_.reset();  // stops scrapes before the collectables go
}

void MetricsServer::Add(std::shared_ptr<prometheus::Collectable> collectable) {
  std::lock_guard<std::mutex> lock(mu_);
  if (exposer_ != nullptr) exposer_->RegisterCollectable(collectable);
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
