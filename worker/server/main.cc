// latentkv-worker: one worker process (a tensor-parallel group of size 1)
// serving the internal Worker service and registering with a coordinator.
// Rank 0 also reports grpc.health.v1 "liveness" and "readiness" (ready once
// registered; standalone: once serving) and, with --metrics_port, Prometheus
// metrics (worker/metrics/worker_metrics.h); follower ranks serve only
// grpc.health.v1 on --port (no metrics).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/address_file.h"
#include "common/auth/cluster_flags.h"
#include "common/auth/cluster_tls.h"
#include "common/flags_help.h"
#include "common/health/health_reporter.h"
#include "common/health/listen.h"
#include "common/heap_bounds.h"
#include "common/metrics/metrics_server.h"
#include "common/signals.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "kernels/backend.h"
#include "model/shard.h"
#include "model/weights.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/nccl_communicator.h"
#include "worker/engine/model_runner.h"
#include "worker/grammar/llguidance_compiler.h"
#include "worker/metrics/worker_metrics.h"
#include "worker/residency/flags.h"
#include "worker/server/kv_transfer.h"
#include "worker/server/prefix_cache.h"
#include "worker/server/worker_service.h"
#include "worker/tp/tensor_parallel.h"

ABSL_FLAG(std::string, model, "",
          "Model directory (config.json + model.safetensors)");
ABSL_FLAG(std::string, coordinator, "",
          "host:port of the coordinator to register with (empty: standalone)");
ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on");
ABSL_FLAG(int, port, 0, "Port to listen on (0: pick a free one)");
ABSL_FLAG(std::string, port_file, "",
          "If set, write the bound host:port to this file once serving");
ABSL_FLAG(std::string, advertise, "",
          "host:port the coordinator should use (default host:bound port)");
ABSL_FLAG(std::string, worker_id, "", "Worker id (default worker-<port>)");
ABSL_FLAG(std::string, device, "cpu",
          "Compute backend: cpu | cuda | cuda:<ordinal> (cuda = cuda:0)");
ABSL_FLAG(std::string, weights_dtype, "auto",
          "dtype of weight matrices in memory: auto (f32 for safetensors "
          "models, as stored for GGUF) | f32 | bf16 | q8_0 | q4_0 | q4_1 | "
          "q5_0 | q5_1 | q2_K | q3_K | q4_K | q5_K | q6_K (the k-quants need "
          "widths that are multiples of 256)");
ABSL_FLAG(std::string, cpu_activations, "f32",
          "CPU products with quantized weights: f32 (exact) | q8 (int8 "
          "activations per block of 32; kernels/cpu/quant_q8.h)");
ABSL_FLAG(int, cpu_q8_min_inputs, 2,
          "--cpu_activations=q8: products with fewer inputs stay exact (>= "
          "1)");
ABSL_FLAG(int, kv_memory_mb, 256, "Bound on KV cache memory, MiB");
ABSL_FLAG(int, page_size, 16, "Token slots per KV page");
ABSL_FLAG(std::string, kv_dtype, "f32",
          "K/V element type in the cache: f32 | bf16 | f16 | fp8_e4m3 (fp8 "
          "with static per-(layer, KV head) scales bounded from the weights)");
ABSL_FLAG(int, max_batch, 64, "Maximum sequences per engine step");
ABSL_FLAG(int, max_step_tokens, 512,
          "Maximum tokens (prefill + decode) per engine step");
ABSL_FLAG(int, max_waiting, 256,
          "Maximum queued requests before RESOURCE_EXHAUSTED");
ABSL_FLAG(std::string, role, "mixed",
          "mixed | prefill (runs prompts for decode workers) | decode (takes "
          "prompts' KV from prefill workers)");
ABSL_FLAG(int, prefill_timeout_ms, 30000,
          "Bound on taking a prompt's KV from a prefill worker before "
          "prefilling here");
ABSL_FLAG(int, kv_pull_timeout_ms, 10000,
          "Bound on a rank pulling its KV heads of a transfer from the "
          "prefill ranks (rank-to-rank); a group follower's pull holds the "
          "group's next step that long at most, then the group prefills");
ABSL_FLAG(std::string, kvstore, "",
          "host:port of latentkv-kvstore, used as a shared prefix cache for "
          "full-cache requests (empty: none)");
ABSL_FLAG(int, kvstore_block_tokens, 16, "Tokens per KV-store block");
ABSL_FLAG(bool, prefix_caching, true,
          "Keep whole KV pages of finished prompts for reuse by later prompts "
          "with the same leading tokens (local prefix cache; reported to the "
          "coordinator for KV-aware routing); in a tensor-parallel group "
          "every rank repeats rank 0's index changes");
ABSL_FLAG(bool, pack_weights, true,
          "Multiply a copy of the weight matrices packed once at start into "
          "the backend's preferred layout (AVX2 CPUs: 16-row panels): faster "
          "batches and prefill for the weights' bytes again in memory");
ABSL_FLAG(int, tp_size, 1, "Tensor-parallel group size (ranks)");
ABSL_FLAG(int, tp_rank, 0,
          "This process's rank; 0 leads (serves gRPC and registers), the "
          "others follow its steps");
ABSL_FLAG(std::string, tp_rendezvous, "",
          "Directory shared by the group's ranks for the rendezvous. The "
          "collectives follow --device: Gloo over TCP for cpu, NCCL for cuda "
          "(each rank on the GPU its --device names, cuda:N; ranks of a "
          "group need distinct GPUs)");
ABSL_FLAG(std::string, tp_group, "group0",
          "Group id (isolates groups that share a rendezvous directory)");
ABSL_FLAG(int, tp_timeout_s, 30,
          "Seconds before a silent or dead peer fails the group");
ABSL_FLAG(int, drain_seconds, 30,
          "On SIGTERM, wait this long for in-flight requests");
ABSL_FLAG(int, metrics_port, 0,
          "Port of the Prometheus /metrics endpoint on --host (0: off; rank "
          "0 only)");

ABSL_FLAG(std::string, structured_output, "auto",
          "Structured output (response_format, regex, grammar) with "
          "llguidance: auto (on when llguidance and the model's tokenizer "
          "load, else off with a warning), on (refuse to start without), "
          "off");
ABSL_FLAG(std::string, llguidance_dir, "",
          "Directory holding libllguidance.so and liblatentkv_pystub.so "
          "(default: $LATENTKV_LLGUIDANCE_DIR, <bin>/../lib/latentkv, the "
          "build's)");

namespace lk = latentkv;

int main(int argc, char** argv) {
  lk::BlockTerminationSignals();
  lk::BoundHeapGrowth();
  lk::ConfigureFlagsHelp();
  absl::ParseCommandLine(argc, argv);
  if (const int code = lk::auth::SetUpClusterProcessFromFlags(); code != 0) {
    return code;
  }
  auto dtype = lk::model::ParseWeightsDType(absl::GetFlag(FLAGS_weights_dtype));
  if (!dtype.ok()) {
    std::fprintf(stderr, "--weights_dtype: %s\n",
                 std::string(dtype.status().message()).c_str());
    return 2;
  }
  lk::model::LoadOptions lo;
  lo.matrix_dtype = *dtype;
  auto weights = lk::model::LoadModel(absl::GetFlag(FLAGS_model), lo);
  if (!weights.ok()) {
    std::fprintf(stderr, "loading model: %s\n",
                 weights.status().ToString().c_str());
    return 1;
  }
  // Tensor parallelism: join the group, keep this rank's shard.
  const int tp_size = absl::GetFlag(FLAGS_tp_size);
  const int tp_rank = absl::GetFlag(FLAGS_tp_rank);
  std::unique_ptr<lk::comm::Communicator> comm;
  std::shared_ptr<const lk::model::ModelWeights> shard(std::move(*weights));
  if (tp_size > 1) {
    // The communicator works on the compute backend's memory: Gloo on host
    // buffers (--device=cpu), NCCL on device buffers (--device=cuda).
    absl::StatusOr<std::unique_ptr<lk::comm::Communicator>> c;
    auto device = lk::kernels::ParseDeviceName(absl::GetFlag(FLAGS_device));
    if (!device.ok()) {
      std::fprintf(stderr, "%s\n", device.status().ToString().c_str());
      return 2;
    }
    if (device->backend == "cuda") {
#if LATENTKV_WITH_CUDA
      lk::comm::NcclOptions no;
      no.rank = tp_rank;
      no.size = tp_size;
      no.device = device->ordinal;  // where the backend computes
      no.rendezvous_dir = absl::GetFlag(FLAGS_tp_rendezvous);
      no.prefix = absl::GetFlag(FLAGS_tp_group);
      no.timeout = absl::Seconds(absl::GetFlag(FLAGS_tp_timeout_s));
      c = lk::comm::CreateNcclCommunicator(no);
#else
      c = absl::UnavailableError(
          "--device=cuda with --tp_size > 1 needs NCCL: build with "
          "-DLATENTKV_WITH_CUDA=ON");
#endif
    } else {
      lk::comm::GlooOptions go;
      go.rank = tp_rank;
      go.size = tp_size;
      go.rendezvous_dir = absl::GetFlag(FLAGS_tp_rendezvous);
      go.prefix = absl::GetFlag(FLAGS_tp_group);
      go.host = absl::GetFlag(FLAGS_host);
      go.timeout = absl::Seconds(absl::GetFlag(FLAGS_tp_timeout_s));
      c = lk::comm::CreateGlooCommunicator(go);
    }
    if (!c.ok()) {
      std::fprintf(stderr, "tensor-parallel rendezvous: %s\n",
                   c.status().ToString().c_str());
      return 1;
    }
    comm = std::move(*c);
    auto s = lk::model::ShardForTensorParallel(shard, tp_rank, tp_size);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
      return 2;
    }
    shard = *s;
  }
  auto activations =
      lk::kernels::ParseActivationQuant(absl::GetFlag(FLAGS_cpu_activations));
  if (!activations.ok()) {
    std::fprintf(stderr, "--cpu_activations: %s\n",
                 activations.status().ToString().c_str());
    return 2;
  }
  lk::kernels::BackendOptions backend_options;
  backend_options.cpu_activations = *activations;
  backend_options.cpu_q8_min_inputs =
      std::max(absl::GetFlag(FLAGS_cpu_q8_min_inputs), 1);
  auto backend =
      lk::kernels::CreateBackend(absl::GetFlag(FLAGS_device), backend_options);
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 1;
  }
  if (comm != nullptr &&
      comm->device_memory() == (*backend)->host_addressable()) {
    // Gloo would read device pointers as host memory (or NCCL host pointers
    // as device memory): refuse instead of crashing in the first step.
    std::fprintf(stderr,
                 "--device=%s computes in %s memory, but the "
                 "tensor-parallel communicator takes %s pointers (Gloo: "
                 "host, NCCL: device)\n",
                 absl::GetFlag(FLAGS_device).c_str(),
                 (*backend)->host_addressable() ? "host" : "device",
                 comm->device_memory() ? "device" : "host");
    return 2;
  }
  lk::worker::EngineOptions eo;
  eo.kv.page_size = absl::GetFlag(FLAGS_page_size);
  eo.kv.max_bytes = int64_t{absl::GetFlag(FLAGS_kv_memory_mb)} << 20;
  {
    const std::optional<lk::DType> kvd =
        lk::ParseDType(absl::GetFlag(FLAGS_kv_dtype));
    if (!kvd || !lk::IsKvDType(*kvd)) {
      std::fprintf(stderr,
                   "--kv_dtype must be f32, bf16, f16 or fp8_e4m3, got '%s'\n",
                   absl::GetFlag(FLAGS_kv_dtype).c_str());
      return 2;
    }
    eo.kv.dtype = *kvd;
  }
  eo.scheduler.max_running = absl::GetFlag(FLAGS_max_batch);
  eo.scheduler.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  eo.scheduler.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  eo.prefix_caching = absl::GetFlag(FLAGS_prefix_caching);
  eo.pack_weights = absl::GetFlag(FLAGS_pack_weights);
  auto residency = lk::worker::ResidencyOptionsFromFlags();
  if (!residency.ok()) {
    std::fprintf(stderr, "%s\n", residency.status().ToString().c_str());
    return 2;
  }
  eo.residency = *residency;
  if (absl::Status st = lk::worker::CheckTensorParallelResidency(
          eo.residency, shard->config.num_layers, tp_size);
      !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 2;
  }
  if (tp_size > 1) {
    // Ranks configured differently would diverge or move KV they cannot
    // read: the whole group refuses to start.
    if (absl::Status st = lk::worker::AgreeOnGroupLayout(
            comm.get(), lk::worker::GroupKvLayout(eo, shard->config));
        !st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 2;
    }
  }
  const std::vector<lk::worker::LayerKvShape> local_shapes =
      lk::worker::KvShapesOf(shard->config);
  const int32_t local_heads =
      local_shapes.empty() ? 0 : local_shapes[0].n_kv_heads;
  // This rank's KV heads of the group's: [head_begin, + local_heads).
  const int32_t head_begin = tp_rank * local_heads;
  const std::vector<lk::worker::LayerKvShape> group_shapes =
      lk::worker::GroupKvShapes(local_shapes, tp_size);
  // The shared store, each rank for its own KV heads (the store completes
  // a block once every head has arrived; any TP size reads it).
  std::unique_ptr<lk::worker::StorePrefixCache> prefix_cache;
  if (!absl::GetFlag(FLAGS_kvstore).empty()) {
    if (absl::GetFlag(FLAGS_kvstore_block_tokens) <= 0) {
      std::fprintf(stderr, "--kvstore needs --kvstore_block_tokens > 0\n");
      return 2;
    }
    lk::worker::PrefixCacheOptions po;
    po.dtype = eo.kv.dtype;
    po.address = absl::GetFlag(FLAGS_kvstore);
    po.block_tokens = absl::GetFlag(FLAGS_kvstore_block_tokens);
    po.model_id = lk::worker::StoreModelId(absl::GetFlag(FLAGS_model));
    if (tp_size > 1) {  // (a group of one writes whole blocks)
      po.head_begin = head_begin;
      po.head_end = head_begin + local_heads;
    }
    prefix_cache =
        std::make_unique<lk::worker::StorePrefixCache>(po, group_shapes);
    eo.kv_store = prefix_cache.get();
  }
  // Rank-to-rank prefill -> decode transfers: a prefill group's ranks park
  // their KV heads for the decode ranks to pull (KvSource on every rank);
  // every worker pulls its own heads of a transfer.
  const int32_t q_per_kv =
      shard->config.num_kv_heads > 0
          ? shard->config.num_heads / shard->config.num_kv_heads
          : 1;
  lk::worker::KvParkingOptions parking_options;
  parking_options.head_offset = head_begin;
  parking_options.q_per_kv = q_per_kv;
  parking_options.ttl =
      absl::Milliseconds(2 * absl::GetFlag(FLAGS_prefill_timeout_ms));
  parking_options.max_bytes = eo.kv.max_bytes;
  lk::worker::KvParking kv_parking(parking_options);
  eo.kv_parking = &kv_parking;
  lk::worker::KvPullerOptions pull_options;
  pull_options.head_begin = head_begin;
  pull_options.head_end = head_begin + local_heads;
  pull_options.group_shapes = group_shapes;
  pull_options.dtype = eo.kv.dtype;
  pull_options.q_per_kv = q_per_kv;
  pull_options.timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_kv_pull_timeout_ms));
  lk::worker::GrpcKvPuller kv_puller(pull_options);
  eo.kv_puller = &kv_puller;
  lk::worker::KvSourceOptions source_options;
  source_options.tp_size = tp_size;
  lk::worker::KvSourceService kv_source(&kv_parking, source_options);
  if (tp_rank > 0) {
    // A follower: repeat the leader's steps until it shuts the group down.
    auto follower = lk::worker::TpFollower::Create(shard, std::move(*backend),
                                                   eo, comm.get());
    if (!follower.ok()) {
      std::fprintf(stderr, "%s\n", follower.status().ToString().c_str());
      return 1;
    }
    // grpc.health.v1 only, on --port: the group is formed, so the rank is
    // live and ready until the process ends (it exits when the group
    // breaks), which is what Kubernetes probes of every rank's pod need.
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder hb;
    hb.RegisterService(&kv_source);  // the KV heads this rank parks
    const std::string fhost = absl::GetFlag(FLAGS_host);
    auto listening = lk::ListenAndStart(hb, fhost, absl::GetFlag(FLAGS_port),
                                        lk::auth::InternalServerCredentials());
    if (!listening.ok()) {
      std::fprintf(stderr, "%s\n", listening.status().ToString().c_str());
      return 1;
    }
    std::unique_ptr<grpc::Server> health_server = std::move(listening->server);
    const int health_port = listening->port;
    lk::HealthReporter follower_health(health_server->GetHealthCheckService(),
                                       /*ready=*/true);
    const std::string advertised = absl::GetFlag(FLAGS_advertise).empty()
                                       ? absl::StrCat(fhost, ":", health_port)
                                       : absl::GetFlag(FLAGS_advertise);
    // The leader tells decode groups where this rank's parked KV is.
    std::vector<std::string> unused;
    if (absl::Status st = comm->GatherStrings(advertised, 0, &unused);
        !st.ok()) {
      std::fprintf(stderr, "tensor-parallel address exchange: %s\n",
                   st.ToString().c_str());
      return 1;
    }
    lk::WriteAddressFile(absl::GetFlag(FLAGS_port_file), advertised);
    std::fprintf(stderr,
                 "latentkv-worker: tensor-parallel rank %d of %d (health on "
                 "%s:%d)\n",
                 tp_rank, tp_size, fhost.c_str(), health_port);
    std::thread([f = follower->get()] {
      const absl::Status st = f->Run();
      std::fprintf(stderr,
                   "latentkv-worker rank follower: %s after %lld "
                   "steps\n",
                   st.ToString().c_str(), static_cast<long long>(f->steps()));
      std::fflush(stderr);
      std::_Exit(st.ok() ? 0 : 1);
    }).detach();
    lk::WaitForTerminationSignal();
    std::_Exit(0);  // the follower thread may sit in a collective
  }
  std::vector<std::string> rank_addresses(1);  // this rank: ""
  if (tp_size > 1) {
    // Where the other ranks serve their parked KV (KvSource).
    if (absl::Status st = comm->GatherStrings("", 0, &rank_addresses);
        !st.ok()) {
      std::fprintf(stderr, "tensor-parallel address exchange: %s\n",
                   st.ToString().c_str());
      return 1;
    }
  }
  lk::worker::TpLeader leader(comm.get());
  if (tp_size > 1) eo.step_listener = &leader;
  auto started = lk::metrics::MetricsServer::StartIfEnabled(
      absl::GetFlag(FLAGS_host), absl::GetFlag(FLAGS_metrics_port));
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", started.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<lk::metrics::MetricsServer> metrics = std::move(*started);
  std::unique_ptr<lk::worker::WorkerMetrics> worker_metrics;
  if (metrics) {
    worker_metrics =
        std::make_unique<lk::worker::WorkerMetrics>(&metrics->registry());
    eo.on_step = [wm = worker_metrics.get()](std::chrono::nanoseconds d) {
      wm->ObserveStep(d);
    };
  }
  auto engine =
      lk::worker::Engine::Create(shard, std::move(*backend), eo, comm.get());
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    return 1;
  }

  const std::string role = absl::GetFlag(FLAGS_role);
  if (role != "mixed" && role != "prefill" && role != "decode") {
    std::fprintf(stderr, "--role must be mixed, prefill or decode\n");
    return 2;
  }
  lk::worker::WorkerServiceOptions so;
  so.tp_size = tp_size;
  so.prefill_timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_prefill_timeout_ms));
  so.prefix_cache = prefix_cache.get();
  so.kv_parking = &kv_parking;
  so.kv_puller = &kv_puller;
  so.rank_addresses = rank_addresses;
  std::unique_ptr<lk::worker::LlguidanceCompiler> constraints;
  if (const std::string mode = absl::GetFlag(FLAGS_structured_output);
      mode != "off" && tp_rank == 0) {
    if (mode != "auto" && mode != "on") {
      std::fprintf(stderr, "--structured_output must be auto, on or off\n");
      return 2;
    }
    auto c = lk::worker::LlguidanceCompiler::CreateForModel(
        absl::GetFlag(FLAGS_model), shard->config,
        absl::GetFlag(FLAGS_llguidance_dir));
    if (c.ok()) {
      constraints = std::move(*c);
      so.constraints = constraints.get();
    } else if (mode == "on") {
      std::fprintf(stderr, "--structured_output=on: %s\n",
                   c.status().ToString().c_str());
      return 1;
    } else {
      std::fprintf(stderr, "structured output off: %s\n",
                   c.status().ToString().c_str());
    }
  }
  lk::worker::WorkerService service(engine->get(), so);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string host = absl::GetFlag(FLAGS_host);
  builder.RegisterService(&service);
  builder.RegisterService(&kv_source);
  auto listening = lk::ListenAndStart(builder, host, absl::GetFlag(FLAGS_port),
                                      lk::auth::InternalServerCredentials());
  if (!listening.ok()) {
    std::fprintf(stderr, "%s\n", listening.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<grpc::Server> server = std::move(listening->server);
  const int bound_port = listening->port;
  const std::string address = absl::GetFlag(FLAGS_advertise).empty()
                                  ? absl::StrCat(host, ":", bound_port)
                                  : absl::GetFlag(FLAGS_advertise);
  std::fprintf(stderr, "latentkv-worker serving on %s\n", address.c_str());
  // Model loaded, group formed: ready once registered (standalone: now).
  lk::HealthReporter health(server->GetHealthCheckService(),
                            absl::GetFlag(FLAGS_coordinator).empty());
  if (metrics) {
    // Metrics are exactly what Worker.GetStats answers (it ignores the
    // context).
    std::vector<int64_t> page_bytes;
    for (int32_t l = 0; l < (*engine)->config().num_layers; ++l) {
      page_bytes.push_back((*engine)->kv_page_bytes(l));
    }
    metrics->Add(lk::worker::WorkerMetrics::NewCollectable(
        [&service] {
          latentkv::v1::WorkerStats stats;
          latentkv::v1::GetStatsRequest req;
          service.GetStats(nullptr, &req, &stats);
          return stats;
        },
        std::move(page_bytes)));
    std::fprintf(stderr, "latentkv-worker: metrics on %s:%d/metrics\n",
                 host.c_str(), metrics->port());
  }

  std::unique_ptr<lk::worker::Registrar> registrar;
  if (!absl::GetFlag(FLAGS_coordinator).empty()) {
    lk::worker::RegistrarOptions ro;
    ro.coordinator = absl::GetFlag(FLAGS_coordinator);
    ro.address = address;
    ro.role = role;
    ro.worker_id = absl::GetFlag(FLAGS_worker_id).empty()
                       ? absl::StrCat("worker-", bound_port)
                       : absl::GetFlag(FLAGS_worker_id);
    ro.model_id =
        std::filesystem::path(absl::GetFlag(FLAGS_model)).filename().string();
    ro.on_registration = [&health](bool registered) {
      health.SetReady(registered);
    };
    registrar = std::make_unique<lk::worker::Registrar>(ro, engine->get());
  }
  lk::WriteAddressFile(absl::GetFlag(FLAGS_port_file), address);
  if (tp_size > 1) {
    // A leader whose group broke (a rank died) leaves: its registration
    // lapses and the coordinator replays its requests on other workers.
    std::thread([e = engine->get()] {
      while (true) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        const absl::Status st = e->group_status();
        if (!st.ok()) {
          std::fprintf(stderr, "latentkv-worker: group failed (%s); exiting\n",
                       st.ToString().c_str());
          std::fflush(stderr);
          std::_Exit(3);
        }
      }
    }).detach();
  }

  const int sig = lk::WaitForTerminationSignal();
  std::fprintf(stderr, "latentkv-worker: signal %d, draining\n", sig);
  health.Drain();
  if (registrar) registrar->Stop();
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds)));
  (*engine)->Stop();
  metrics.reset();  // no scrape may outlive the service it reads
  return 0;
}
