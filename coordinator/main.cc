// latentkv-coordinator: the public gRPC API (Generation, health, reflection)
// and the Control service workers register with.
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
#include "coordinator/coordinator_service.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

ABSL_FLAG(std::string, model, "", "Model directory (config.json + tokenizer)");
ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on");
ABSL_FLAG(int, port, 0, "Port to listen on (0: pick a free one)");
ABSL_FLAG(std::string, port_file, "",
          "If set, write the bound host:port to this file once serving");
ABSL_FLAG(int, max_inflight, 512,
          "Requests in flight before RESOURCE_EXHAUSTED");
ABSL_FLAG(int, heartbeat_ms, 500, "Heartbeat period asked of workers");
ABSL_FLAG(int, worker_timeout_ms, 3000, "A worker silent this long is removed");
ABSL_FLAG(std::string, routing, "kv",
          "kv: route by the prompt prefix each worker caches vs its load; "
          "load: least loaded");
ABSL_FLAG(double, kv_overlap_weight, 1.0,
          "kv routing: weight of the prefill tokens a worker would compute "
          "against the prompt tokens it has in flight (>= 0)");
ABSL_FLAG(int, drain_seconds, 30,
          "On SIGTERM, wait this long for in-flight requests");

namespace lk = latentkv;

int main(int argc, char** argv) {
  lk::BlockTerminationSignals();
  absl::ParseCommandLine(argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_model);
  auto config = lk::model::ModelConfig::FromDir(dir);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  auto tokenizer = lk::model::LoadTokenizer(dir, config->vocab_size);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  lk::coordinator::CoordinatorOptions co;
  co.model_id = std::filesystem::path(dir).filename().string();
  co.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  const std::string routing = absl::GetFlag(FLAGS_routing);
  if (routing != "kv" && routing != "load") {
    std::fprintf(stderr, "--routing must be kv or load, not %s\n",
                 routing.c_str());
    return 2;
  }
  co.routing.kv_aware = routing == "kv";
  co.routing.overlap_weight = absl::GetFlag(FLAGS_kv_overlap_weight);
  if (!(co.routing.overlap_weight >= 0)) {
    std::fprintf(stderr, "--kv_overlap_weight must be >= 0\n");
    return 2;
  }
  co.heartbeat_interval =
      std::chrono::milliseconds(absl::GetFlag(FLAGS_heartbeat_ms));
  co.worker_timeout =
      std::chrono::milliseconds(absl::GetFlag(FLAGS_worker_timeout_ms));
  lk::coordinator::Coordinator coord(co, *config, std::move(*tokenizer));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  const std::string host = absl::GetFlag(FLAGS_host);
  builder.AddListeningPort(absl::StrCat(host, ":", absl::GetFlag(FLAGS_port)),
                           grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(coord.generation_service());
  builder.RegisterService(coord.control_service());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    std::fprintf(stderr, "cannot listen on %s:%d\n", host.c_str(),
                 absl::GetFlag(FLAGS_port));
    return 1;
  }
  coord.AttachHealth(server->GetHealthCheckService());
  const std::string address = absl::StrCat(host, ":", bound_port);
  std::fprintf(stderr, "latentkv-coordinator serving on %s\n", address.c_str());
  lk::WriteAddressFile(absl::GetFlag(FLAGS_port_file), address);
  const int sig = lk::WaitForTerminationSignal();
  std::fprintf(stderr, "latentkv-coordinator: signal %d, draining\n", sig);
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds)));
  coord.Stop();
  return 0;
}
