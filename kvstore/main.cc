// latentkv-kvstore: the disaggregated latent-KV store (latentkv.v1.KvStore,
// grpc.health.v1 and reflection) over one in-memory BlockStore. Health:
// "liveness" and "readiness" SERVING once listening, NOT_SERVING once
// draining. --metrics_port: Prometheus metrics of the store (blocks and
// bytes held, hits and misses, stores, evictions).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/address_file.h"
#include "common/auth/cluster_flags.h"
#include "common/auth/cluster_tls.h"
#include "common/flags_help.h"
#include "common/health/health_reporter.h"
#include "common/health/listen.h"
#include "common/heap_bounds.h"
#include "common/metrics/metrics_server.h"
#include "common/signals.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "kvstore/block_store.h"
#include "kvstore/kvstore_service.h"
#include "kvstore/proto_convert.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on");
ABSL_FLAG(int, port, 0, "Port to listen on (0: pick a free one)");
ABSL_FLAG(std::string, port_file, "",
          "If set, write the bound host:port to this file once serving");
ABSL_FLAG(int64_t, capacity_mb, 1024,
          "Bound on resident block payload bytes, MiB");
ABSL_FLAG(int64_t, max_events, 65536,
          "Events kept for Subscribe; older subscribers get OUT_OF_RANGE");
ABSL_FLAG(int64_t, max_blocks, int64_t{1} << 20, "Bound on resident blocks");
ABSL_FLAG(int64_t, max_layer_mb, 64,
          "Bound on one layer payload of one block, MiB");
ABSL_FLAG(int64_t, max_pending_mb, 256,
          "Bound on payload bytes of blocks whose KV-head parts (tensor-"
          "parallel ranks' writes) have not all arrived, MiB");
ABSL_FLAG(int64_t, pending_timeout_ms, 30000,
          "An incomplete block older than this is dropped, ms");
ABSL_FLAG(int, max_request_mb, 256,
          "Largest request message accepted, MiB (larger: RESOURCE_EXHAUSTED)");
ABSL_FLAG(std::string, layout, "",
          "Fix the store's layout at start: a latentkv.v1.KvLayout in proto "
          "text format (empty: the first Put fixes it)");
ABSL_FLAG(int, drain_seconds, 5,
          "On SIGTERM, wait this long for in-flight calls");
ABSL_FLAG(int, metrics_port, 0,
          "Port of the Prometheus /metrics endpoint on --host (0: off)");

namespace lk = latentkv;

namespace {

// The store's metrics, read from BlockStore::stats() on every scrape.
std::vector<prometheus::MetricFamily> StoreFamilies(
    const lk::kvstore::BlockStore& store) {
  const lk::kvstore::BlockStoreStats st = store.stats();
  std::vector<prometheus::MetricFamily> out;
  auto add = [&](prometheus::MetricFamily f, double v,
                 const lk::metrics::Labels& labels = {}) {
    lk::metrics::AddSample(f, v, labels);
    out.push_back(std::move(f));
  };
  using lk::metrics::CounterFamily;
  using lk::metrics::GaugeFamily;
  add(GaugeFamily("latentkv_kvstore_blocks", "Resident blocks"), st.blocks);
  add(GaugeFamily("latentkv_kvstore_bytes", "Resident payload bytes"),
      st.bytes_used);
  add(GaugeFamily("latentkv_kvstore_capacity_bytes", "Payload byte bound"),
      st.capacity_bytes);
  auto hits = CounterFamily("latentkv_kvstore_hit_blocks_total",
                            "Block keys found resident, by call");
  lk::metrics::AddSample(hits, st.lookup_hit_blocks, {{"call", "lookup"}});
  lk::metrics::AddSample(hits, st.get_hit_blocks, {{"call", "get"}});
  out.push_back(std::move(hits));
  auto misses =
      CounterFamily("latentkv_kvstore_miss_blocks_total",
                    "Block keys asked for beyond the resident prefix, by call");
  lk::metrics::AddSample(misses, st.lookup_miss_blocks, {{"call", "lookup"}});
  lk::metrics::AddSample(misses, st.get_miss_blocks, {{"call", "get"}});
  out.push_back(std::move(misses));
  add(CounterFamily("latentkv_kvstore_stored_blocks_total",
                    "Blocks newly stored by Put"),
      st.stored_blocks);
  add(CounterFamily("latentkv_kvstore_duplicate_blocks_total",
                    "Put blocks that were already resident"),
      st.duplicate_blocks);
  add(CounterFamily("latentkv_kvstore_evicted_blocks_total",
                    "Blocks evicted for room (leaf LRU)"),
      st.evicted_blocks);
  add(CounterFamily("latentkv_kvstore_evicted_bytes_total",
                    "Payload bytes evicted for room"),
      st.evicted_bytes);
  add(GaugeFamily("latentkv_kvstore_pending_blocks",
                  "Blocks written in KV-head parts, not whole yet"),
      st.pending_blocks);
  add(GaugeFamily("latentkv_kvstore_pending_bytes",
                  "Payload bytes of blocks not whole yet"),
      st.pending_bytes);
  add(CounterFamily("latentkv_kvstore_dropped_pending_blocks_total",
                    "Incomplete blocks dropped (timed out, pushed out or "
                    "refused)"),
      st.dropped_pending_blocks);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  lk::BlockTerminationSignals();
  lk::BoundHeapGrowth();
  lk::ConfigureFlagsHelp();
  absl::ParseCommandLine(argc, argv);
  if (const int code = lk::auth::SetUpClusterProcessFromFlags(); code != 0) {
    return code;
  }
  lk::kvstore::BlockStore::Options so;
  so.capacity_bytes = absl::GetFlag(FLAGS_capacity_mb) << 20;
  so.max_events = static_cast<size_t>(absl::GetFlag(FLAGS_max_events));
  so.max_blocks = static_cast<size_t>(absl::GetFlag(FLAGS_max_blocks));
  so.max_layer_bytes = absl::GetFlag(FLAGS_max_layer_mb) << 20;
  so.max_pending_bytes = absl::GetFlag(FLAGS_max_pending_mb) << 20;
  so.pending_timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_pending_timeout_ms));
  if (absl::GetFlag(FLAGS_max_events) < 1 ||
      absl::GetFlag(FLAGS_max_blocks) < 1) {
    std::fprintf(stderr, "--max_events and --max_blocks must be >= 1\n");
    return 2;
  }
  if (!absl::GetFlag(FLAGS_layout).empty()) {
    latentkv::v1::KvLayout layout;
    if (!google::protobuf::TextFormat::ParseFromString(
            absl::GetFlag(FLAGS_layout), &layout)) {
      std::fprintf(stderr, "--layout is not a text-format KvLayout\n");
      return 2;
    }
    so.layout = lk::kvstore::FromProto(layout);
  }
  auto store = lk::kvstore::BlockStore::Create(so);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 2;
  }
  const int max_request_mb = absl::GetFlag(FLAGS_max_request_mb);
  if (max_request_mb < 1 || max_request_mb > 2047) {
    std::fprintf(stderr, "--max_request_mb must be in [1, 2047]\n");
    return 2;
  }
  lk::kvstore::KvStoreService service(store->get(), {});
  auto started = lk::metrics::MetricsServer::StartIfEnabled(
      absl::GetFlag(FLAGS_host), absl::GetFlag(FLAGS_metrics_port));
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", started.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<lk::metrics::MetricsServer> metrics = std::move(*started);
  if (metrics) {
    metrics->Add(std::make_shared<lk::metrics::FunctionCollectable>(
        [s = store->get()] { return StoreFamilies(*s); }));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(max_request_mb << 20);
  const std::string host = absl::GetFlag(FLAGS_host);
  builder.RegisterService(&service);
  auto listening = lk::ListenAndStart(builder, host, absl::GetFlag(FLAGS_port),
                                      lk::auth::InternalServerCredentials());
  if (!listening.ok()) {
    std::fprintf(stderr, "%s\n", listening.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<grpc::Server> server = std::move(listening->server);
  const int bound_port = listening->port;
  const std::string address = absl::StrCat(host, ":", bound_port);
  std::fprintf(stderr,
               "latentkv-kvstore serving on %s (capacity %lld MiB, epoch "
               "%llu)\n",
               address.c_str(),
               static_cast<long long>(absl::GetFlag(FLAGS_capacity_mb)),
               static_cast<unsigned long long>((*store)->epoch()));
  lk::HealthReporter health(server->GetHealthCheckService(), /*ready=*/true);
  if (metrics) {
    std::fprintf(stderr, "latentkv-kvstore: metrics on %s:%d/metrics\n",
                 host.c_str(), metrics->port());
  }
  lk::WriteAddressFile(absl::GetFlag(FLAGS_port_file), address);

  const int sig = lk::WaitForTerminationSignal();
  std::fprintf(stderr, "latentkv-kvstore: signal %d, shutting down\n", sig);
  health.Drain();
  // Subscribers end first (UNAVAILABLE), then in-flight calls drain; idle
  // connections are cut at once (see KvStoreService::in_flight()).
  (*store)->Close();
  const absl::Time drain_until =
      absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_drain_seconds));
  while (service.in_flight() > 0 && absl::Now() < drain_until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  server->Shutdown(std::chrono::system_clock::now());
  std::fprintf(stderr, "latentkv-kvstore: stopped\n");
  return 0;
}
