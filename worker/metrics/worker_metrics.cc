#include "worker/metrics/worker_metrics.h"

#include <string>

#include "common/metrics/metrics_server.h"

namespace latentkv::worker {
namespace {

using metrics::AddSample;
using metrics::CounterFamily;
using metrics::GaugeFamily;

}  // namespace

std::vector<prometheus::MetricFamily> WorkerFamilies(
    const latentkv::v1::WorkerStats& s,
    const std::vector<int64_t>& layer_page_bytes) {
  std::vector<prometheus::MetricFamily> out;
  auto gauge = [&](const char* name, const char* help, double v,
                   const metrics::Labels& labels = {}) {
    out.push_back(GaugeFamily(name, help));
    AddSample(out.back(), v, labels);
  };
  auto counter = [&](const char* name, const char* help, double v) {
    out.push_back(CounterFamily(name, help));
    AddSample(out.back(), v);
  };
  const metrics::Labels device = {{"tier", "device"}};
  gauge("latentkv_worker_running_sequences", "Sequences in the running batch",
        s.running());
  gauge("latentkv_worker_waiting_sequences", "Requests queued, not yet running",
        s.waiting());
  gauge("latentkv_worker_kv_pages_in_use", "KV pages in use, all layers",
        s.kv_pages_in_use(), device);
  gauge("latentkv_worker_kv_pages_capacity", "KV pages, all layers",
        s.kv_pages_total(), device);
  gauge("latentkv_worker_kv_bytes_in_use", "Bytes of KV pages in use",
        s.kv_bytes_in_use(), device);
  gauge("latentkv_worker_kv_bytes_capacity", "Bytes of the KV cache",
        s.kv_bytes_capacity(), device);

  auto layer_bytes = GaugeFamily("latentkv_worker_kv_layer_bytes_in_use",
                                 "Bytes of KV pages in use per layer");
  auto layer_pages = GaugeFamily("latentkv_worker_kv_layer_pages_in_use",
                                 "KV pages in use per layer");
  for (int l = 0; l < s.kv_layer_bytes_in_use_size(); ++l) {
    const metrics::Labels layer = {{"layer", std::to_string(l)}};
    const double bytes = static_cast<double>(s.kv_layer_bytes_in_use(l));
    AddSample(layer_bytes, bytes, layer);
    if (l < static_cast<int>(layer_page_bytes.size()) &&
        layer_page_bytes[l] > 0) {
      AddSample(layer_pages, bytes / layer_page_bytes[l], layer);
    }
  }
  out.push_back(std::move(layer_bytes));
  out.push_back(std::move(layer_pages));

  gauge("latentkv_worker_prefix_cached_blocks",
        "Blocks held by the local prefix cache", s.prefix_cached_blocks());
  gauge("latentkv_worker_prefix_hit_ratio",
        "Local prefix cache: prompt tokens shared / prompt tokens looked up, "
        "since start (0 before any lookup)",
        s.prefix_lookup_tokens() > 0
            ? static_cast<double>(s.prefix_hit_tokens()) /
                  static_cast<double>(s.prefix_lookup_tokens())
            : 0.0);

  counter("latentkv_worker_steps_total", "Engine steps that ran a batch",
          s.steps());
  counter("latentkv_worker_generated_tokens_total", "Tokens sampled",
          s.tokens_generated());
  counter("latentkv_worker_preemptions_total",
          "Sequences preempted for KV pages (recomputed later)",
          s.preemptions());
  counter("latentkv_worker_kv_evicted_slots_total",
          "KV slots dropped by residency (compression) policies",
          s.kv_evicted_slots());
  counter("latentkv_worker_kv_imports_total",
          "Requests started from a transferred or stored KV", s.kv_imports());
  counter("latentkv_worker_kv_transfers_total",
          "Prefill->decode KV transfers received", s.kv_transfers());
  counter("latentkv_worker_kv_transfer_bytes_total",
          "Bytes of KV rows received in transfers (latent layout)",
          s.kv_transfer_bytes());
  counter("latentkv_worker_kv_transfer_full_dim_bytes_total",
          "Bytes the same transfers would move with full head dimensions",
          s.kv_transfer_full_bytes());
  counter("latentkv_worker_kv_transfers_pulled_total",
          "Transfers pulled rank to rank from the prefill ranks",
          s.kv_transfers_pulled());
  counter("latentkv_worker_kv_transfer_fallbacks_total",
          "Transfers that failed (prompt prefilled locally)",
          s.kv_transfer_fallbacks());
  counter("latentkv_worker_prefix_lookup_tokens_total",
          "Local prefix cache: prompt tokens looked up",
          s.prefix_lookup_tokens());
  counter("latentkv_worker_prefix_hit_tokens_total",
          "Local prefix cache: prompt tokens shared, not computed",
          s.prefix_hit_tokens());
  counter("latentkv_worker_prefix_hits_total",
          "Local prefix cache: requests that shared at least one block",
          s.prefix_hits());
  counter("latentkv_worker_prefix_evicted_blocks_total",
          "Local prefix cache: blocks evicted for room",
          s.prefix_evicted_blocks());
  counter("latentkv_worker_kvstore_lookups_total",
          "Shared KV store: prefix lookups", s.kv_prefix_lookups());
  counter("latentkv_worker_kvstore_hit_tokens_total",
          "Shared KV store: prompt tokens fetched, not computed",
          s.kv_prefix_hit_tokens());
  counter("latentkv_worker_kvstore_published_blocks_total",
          "Shared KV store: blocks published", s.kv_blocks_published());
  counter("latentkv_worker_kvstore_errors_total",
          "Shared KV store: failed calls", s.kv_store_errors());
  return out;
}

WorkerMetrics::WorkerMetrics(prometheus::Registry* registry) {
  step_ = &prometheus::BuildHistogram()
               .Name("latentkv_worker_step_seconds")
               .Help("Wall time of engine steps that ran a batch")
               .Register(*registry)
               .Add({}, metrics::ExponentialBuckets(1e-4, 2.0, 16));
}

void WorkerMetrics::ObserveStep(std::chrono::nanoseconds step) {
  step_->Observe(std::chrono::duration<double>(step).count());
}

std::shared_ptr<prometheus::Collectable> WorkerMetrics::NewCollectable(
    std::function<latentkv::v1::WorkerStats()> snapshot,
    std::vector<int64_t> layer_page_bytes) {
  return std::make_shared<metrics::FunctionCollectable>(
      [snapshot = std::move(snapshot), pages = std::move(layer_page_bytes)] {
        return WorkerFamilies(snapshot(), pages);
      });
}

}  // namespace latentkv::worker
