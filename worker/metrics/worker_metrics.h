// Prometheus metrics of a latentkv-worker (the group leader, TP rank 0:
// follower ranks serve no metrics). Everything but the step histogram is
// read on each scrape from the worker's stats snapshot (the answer of
// Worker.GetStats), so the engine carries no metric code.
//
// Gauges:
//   latentkv_worker_running_sequences, latentkv_worker_waiting_sequences
//   latentkv_worker_kv_pages_in_use{tier}, _kv_pages_capacity{tier},
//   latentkv_worker_kv_bytes_in_use{tier}, _kv_bytes_capacity{tier}
//       tier="device" only: the engine's paged cache is the only KV tier
//       (no host tier exists yet)
//   latentkv_worker_kv_layer_pages_in_use{layer}, _kv_layer_bytes_in_use{layer}
//   latentkv_worker_prefix_cached_blocks      local prefix cache blocks held
//   latentkv_worker_prefix_hit_ratio          prefix hit tokens / prompt
//                                             tokens looked up, since start
// Counters:
//   latentkv_worker_steps_total, _generated_tokens_total, _preemptions_total
//   latentkv_worker_kv_evicted_slots_total    dropped by residency policies
//   latentkv_worker_kv_imports_total          requests started from a
//                                             transferred or stored KV
//   latentkv_worker_kv_transfers_total        prefill->decode transfers in
//   latentkv_worker_kv_transfer_bytes_total   their bytes (latent layout)
//   latentkv_worker_kv_transfer_full_dim_bytes_total   what full head dims
//                                             would have moved
//   latentkv_worker_kv_transfer_fallbacks_total
//   latentkv_worker_prefix_lookup_tokens_total, _prefix_hit_tokens_total,
//   latentkv_worker_prefix_hits_total, _prefix_evicted_blocks_total
//                                             (local prefix cache)
//   latentkv_worker_kvstore_lookups_total, _kvstore_hit_tokens_total,
//   latentkv_worker_kvstore_published_blocks_total, _kvstore_errors_total
//                                             (the shared latentkv-kvstore)
// Histogram:
//   latentkv_worker_step_seconds              wall time of engine steps
//                                             that ran a batch
// Thread-safety: all methods are thread-safe.
#ifndef LATENTKV_WORKER_METRICS_WORKER_METRICS_H_
#define LATENTKV_WORKER_METRICS_WORKER_METRICS_H_

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "latentkv/v1/worker.pb.h"
#include "prometheus/collectable.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace latentkv::worker {

// The scrape-time families for one stats snapshot. layer_page_bytes[l]: the
// bytes of one KV page of layer l (Engine::kv_page_bytes), to turn the
// per-layer bytes into pages; layers without it report bytes only.
std::vector<prometheus::MetricFamily> WorkerFamilies(
    const latentkv::v1::WorkerStats& stats,
    const std::vector<int64_t>& layer_page_bytes);

class WorkerMetrics {
 public:
  // Registers the step histogram in `registry` (which must outlive this).
  explicit WorkerMetrics(prometheus::Registry* registry);

  // For EngineOptions::on_step.
  void ObserveStep(std::chrono::nanoseconds step);
  // The scrape-time families (WorkerFamilies), for MetricsServer::Add.
  // `snapshot` is called on every scrape, from the exposer's threads.
  static std::shared_ptr<prometheus::Collectable> NewCollectable(
      std::function<latentkv::v1::WorkerStats()> snapshot,
      std::vector<int64_t> layer_page_bytes);

 private:
  prometheus::Histogram* step_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_METRICS_WORKER_METRICS_H_
