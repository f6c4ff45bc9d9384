#include "worker/metrics/worker_metrics.h"

#include <map>

#include "gtest/gtest.h"

namespace latentkv::worker {
namespace {

// name{labels} -> value over the families.
std::map<std::string, double> Flatten(
    const std::vector<prometheus::MetricFamily>& families) {
  std::map<std::string, double> out;
  for (const auto& f : families) {
    for (const auto& m : f.metric) {
      std::string key = f.name;
      for (const auto& l : m.label) key += "{" + l.name + "=" + l.value + "}";
      out[key] = f.type == prometheus::MetricType::Counter ? m.counter.value
                                                           : m.gauge.value;
    }
  }
  return out;
}

TEST(WorkerMetricsTest, FamiliesFromAStatsSnapshot) {
  latentkv::v1::WorkerStats s;
  s.set_running(2);
  s.set_waiting(5);
  s.set_kv_pages_in_use(12);
  s.set_kv_pages_total(100);
  s.set_kv_bytes_in_use(12 * 64);
  s.add_kv_layer_bytes_in_use(8 * 64);
  s.add_kv_layer_bytes_in_use(4 * 32);
  s.set_steps(9);
  s.set_kv_transfer_bytes(1000);
  s.set_kv_transfer_full_bytes(4000);
  s.set_prefix_lookup_tokens(40);
  s.set_prefix_hit_tokens(10);
  const auto m = Flatten(WorkerFamilies(s, {64, 32}));
  EXPECT_EQ(m.at("latentkv_worker_running_sequences"), 2);
  EXPECT_EQ(m.at("latentkv_worker_waiting_sequences"), 5);
  EXPECT_EQ(m.at("latentkv_worker_kv_pages_in_use{tier=device}"), 12);
  EXPECT_EQ(m.at("latentkv_worker_kv_pages_capacity{tier=device}"), 100);
  EXPECT_EQ(m.at("latentkv_worker_kv_layer_pages_in_use{layer=0}"), 8);
  EXPECT_EQ(m.at("latentkv_worker_kv_layer_pages_in_use{layer=1}"), 4);
  EXPECT_EQ(m.at("latentkv_worker_kv_layer_bytes_in_use{layer=1}"), 128);
  EXPECT_EQ(m.at("latentkv_worker_steps_total"), 9);
  EXPECT_EQ(m.at("latentkv_worker_kv_transfer_bytes_total"), 1000);
  EXPECT_EQ(m.at("latentkv_worker_kv_transfer_full_dim_bytes_total"), 4000);
  EXPECT_DOUBLE_EQ(m.at("latentkv_worker_prefix_hit_ratio"), 0.25);
  // Without page sizes, layers report bytes only.
  const auto bytes_only = Flatten(WorkerFamilies(s, {}));
  EXPECT_EQ(bytes_only.count("latentkv_worker_kv_layer_pages_in_use{layer=0}"),
            0u);
  EXPECT_EQ(bytes_only.at("latentkv_worker_prefix_hit_ratio"), 0.25);
  EXPECT_EQ(
      Flatten(WorkerFamilies({}, {})).at("latentkv_worker_prefix_hit_ratio"),
      0.0);
}

}  // namespace
}  // namespace latentkv::worker
