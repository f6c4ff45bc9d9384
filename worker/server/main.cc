// latentkv-worker: one worker process (a tensor-parallel group of size 1)
// serving the internal Worker service and registering with a coordinator.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/address_file.h"
#include "common/signals.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "kernels/backend.h"
#include "model/weights.h"
#include "worker/residency/flags.h"
#include "worker/server/worker_service.h"

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
ABSL_FLAG(std::string, device, "cpu", "Compute backend: cpu | cuda");
ABSL_FLAG(std::string, weights_dtype, "f32",
          "dtype of weight matrices in memory: f32 | bf16");
ABSL_FLAG(int, kv_memory_mb, 256, "Bound on KV cache memory, MiB");
ABSL_FLAG(int, page_size, 16, "Token slots per KV page");
ABSL_FLAG(int, max_batch, 64, "Maximum sequences per engine step");
ABSL_FLAG(int, max_step_tokens, 512,
          "Maximum tokens (prefill + decode) per engine step");
ABSL_FLAG(int, max_waiting, 256,
          "Maximum queued requests before RESOURCE_EXHAUSTED");
ABSL_FLAG(int, drain_seconds, 30,
          "On SIGTERM, wait this long for in-flight requests");

namespace lk = latentkv;

int main(int argc, char** argv) {
  lk::BlockTerminationSignals();
  absl::ParseCommandLine(argc, argv);
  auto dtype = lk::ParseDType(absl::GetFlag(FLAGS_weights_dtype));
  if (!dtype || *dtype == lk::DType::kF16) {
    std::fprintf(stderr, "--weights_dtype must be f32 or bf16\n");
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
  auto backend = lk::kernels::CreateBackend(absl::GetFlag(FLAGS_device));
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 1;
  }
  lk::worker::EngineOptions eo;
  eo.kv.page_size = absl::GetFlag(FLAGS_page_size);
  eo.kv.max_bytes = int64_t{absl::GetFlag(FLAGS_kv_memory_mb)} << 20;
  eo.scheduler.max_running = absl::GetFlag(FLAGS_max_batch);
  eo.scheduler.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  eo.scheduler.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  auto residency = lk::worker::ResidencyOptionsFromFlags();
  if (!residency.ok()) {
    std::fprintf(stderr, "%s\n", residency.status().ToString().c_str());
    return 2;
  }
  eo.residency = *residency;
  auto engine = lk::worker::Engine::Create(
      std::shared_ptr<const lk::model::ModelWeights>(std::move(*weights)),
      std::move(*backend), eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    return 1;
  }

  lk::worker::WorkerService service(engine->get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  const std::string host = absl::GetFlag(FLAGS_host);
  builder.AddListeningPort(absl::StrCat(host, ":", absl::GetFlag(FLAGS_port)),
                           grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    std::fprintf(stderr, "cannot listen on %s:%d\n", host.c_str(),
                 absl::GetFlag(FLAGS_port));
    return 1;
  }
  const std::string address = absl::GetFlag(FLAGS_advertise).empty()
                                  ? absl::StrCat(host, ":", bound_port)
                                  : absl::GetFlag(FLAGS_advertise);
  std::fprintf(stderr, "latentkv-worker serving on %s\n", address.c_str());

  std::unique_ptr<lk::worker::Registrar> registrar;
  if (!absl::GetFlag(FLAGS_coordinator).empty()) {
    lk::worker::RegistrarOptions ro;
    ro.coordinator = absl::GetFlag(FLAGS_coordinator);
    ro.address = address;
    ro.worker_id = absl::GetFlag(FLAGS_worker_id).empty()
                       ? absl::StrCat("worker-", bound_port)
                       : absl::GetFlag(FLAGS_worker_id);
    ro.model_id =
        std::filesystem::path(absl::GetFlag(FLAGS_model)).filename().string();
    registrar = std::make_unique<lk::worker::Registrar>(ro, engine->get());
  }
  lk::WriteAddressFile(absl::GetFlag(FLAGS_port_file), address);

  const int sig = lk::WaitForTerminationSignal();
  std::fprintf(stderr, "latentkv-worker: signal %d, draining\n", sig);
  if (registrar) registrar->Stop();
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds)));
  (*engine)->Stop();
  return 0;
}
