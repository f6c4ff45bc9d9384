// latentkv-coordinator: the public gRPC API (Generation, health, reflection)
// on --port, TLS with --tls_cert/--tls_key; the Control service workers
// register with on an internal port (--internal_port; cluster mutual TLS and
// secret, common/auth/cluster_tls.h); optionally the OpenAI HTTP API
// (--http_port, TLS like --port) and Prometheus metrics (--metrics_port).
// Health services: "liveness" SERVING while up, "readiness" (and "") while a
// worker is registered; both NOT_SERVING once draining.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/address_file.h"
#include "common/auth/cluster_flags.h"
#include "common/auth/cluster_tls.h"
#include "common/auth/tls.h"
#include "common/flags_help.h"
#include "common/health/health_reporter.h"
#include "common/health/listen.h"
#include "common/heap_bounds.h"
#include "common/metrics/metrics_server.h"
#include "common/reflection/reflection_v1.h"
#include "common/signals.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/http/http_server.h"
#include "coordinator/metrics/coordinator_metrics.h"
#include "coordinator/parse_error_interceptor.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "model/gguf_loader.h"
#include "model/tokenizer/builtin_chat_templates.h"
#include "model/tokenizer/tokenizer.h"

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
ABSL_FLAG(int, http_port, 0,
          "Port of the OpenAI-compatible HTTP API on --host (0: off)");
ABSL_FLAG(std::string, api_key, "",
          "API keys of the public API, comma-separated (prefer "
          "--api_key_file: command lines are visible to local users); "
          "empty with no file: no authentication");
ABSL_FLAG(std::string, api_key_file, "",
          "File of API keys, one per line ('#' comments); clients send "
          "\"Authorization: Bearer <key>\" (HTTP header or gRPC metadata). "
          "Health checks, reflection and /metrics stay open");
ABSL_FLAG(std::string, http_allowed_origins, "",
          "Comma-separated origins (scheme://host[:port], or *) whose web "
          "pages may call the HTTP API (CORS); requests with any other "
          "Origin header get 403. Empty: none");
ABSL_FLAG(int, http_request_deadline_s, 30,
          "Seconds an HTTP connection may take to deliver a whole request "
          "after it opens or its previous response ends (slowloris); then "
          "it is closed");
ABSL_FLAG(int, http_max_body_mb, 2,
          "Largest HTTP request body in MiB (1..3: a request must fit gRPC's "
          "4 MiB messages); longer ones get 413");
ABSL_FLAG(int, http_threads, 64,
          "HTTP connection threads (a generating request holds one)");
ABSL_FLAG(int, http_max_queued, 64,
          "HTTP connections waiting for a thread before 429");
ABSL_FLAG(std::string, served_model_name, "",
          "Model id reported by ListModels and the OpenAI API (and accepted "
          "in requests' model field); default: the --model directory or "
          "file name without .gguf");
ABSL_FLAG(std::string, tool_call_parser, "auto",
          "How replies write tool calls (chat API tools): auto (Llama 3's "
          "JSON when the chat template renders tools with <|python_tag|>, "
          "else Hermes' <tool_call>), hermes or llama3_json");
ABSL_FLAG(int, metrics_port, 0,
          "Port of the Prometheus /metrics endpoint on --host (0: off)");
ABSL_FLAG(std::string, tls_cert, "",
          "TLS certificate chain (PEM) of the public gRPC and HTTP ports; "
          "with --tls_key. Empty: plaintext");
ABSL_FLAG(std::string, tls_key, "", "Private key (PEM) of --tls_cert");
ABSL_FLAG(std::string, internal_host, "",
          "Address of the internal port (Control, for workers); default "
          "--host");
ABSL_FLAG(int, internal_port, 0,
          "Internal port serving Control (worker registration) and health, "
          "with the cluster credentials (0: pick a free one)");
ABSL_FLAG(std::string, internal_port_file, "",
          "If set, write the internal host:port there once serving");

namespace lk = latentkv;

namespace {

// The chat template in GGUF metadata (tokenizer.chat_template and the BOS/EOS
// token texts); the default template when the file has none.
absl::StatusOr<lk::coordinator::http::ChatTemplate> GgufChatTemplate(
    const lk::model::GgufFile& f, bool adds_bos) {
  std::string origin = "gguf";
  absl::StatusOr<std::string> source = absl::NotFoundError("no template");
  if (f.Has("tokenizer.chat_template")) {
    source = f.GetString("tokenizer.chat_template");
    if (!source.ok()) return source.status();
  } else if (auto arch = f.GetString("general.architecture"); arch.ok()) {
    // A file without one: the family's built-in template, if any.
    if (auto builtin = lk::model::BuiltinChatTemplate(*arch)) {
      source = *std::move(builtin);
      origin = "builtin:" + *arch;
    }
  }
  if (!source.ok()) return lk::coordinator::http::ChatTemplate();
  auto tokens = f.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  auto text = [&](const char* key) -> std::string {
    auto id = f.GetInt(key);
    if (!id.ok() || *id < 0 || *id >= static_cast<int64_t>(tokens->size())) {
      return "";
    }
    return (*tokens)[*id];
  };
  return lk::coordinator::http::ChatTemplate::FromJinja(
      *source, text("tokenizer.ggml.bos_token_id"),
      text("tokenizer.ggml.eos_token_id"), adds_bos, origin);
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
  const std::string dir = absl::GetFlag(FLAGS_model);
  // A GGUF model is opened once for its config, tokenizer and chat template,
  // and closed after start-up.
  auto resolved = lk::model::ResolveModelPath(dir);
  if (!resolved.ok()) {
    std::fprintf(stderr, "%s\n", resolved.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<lk::model::GgufFile> gguf;
  if (*resolved) {
    auto f = lk::model::GgufFile::Open(**resolved);
    if (!f.ok()) {
      std::fprintf(stderr, "%s\n", f.status().ToString().c_str());
      return 1;
    }
    gguf = std::move(*f);
  }
  auto config = gguf ? lk::model::ConfigFromGguf(*gguf)
                     : lk::model::ModelConfig::FromDir(dir);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  auto tokenizer = gguf ? lk::model::LoadGgufTokenizer(*gguf)
                        : lk::model::LoadTokenizer(dir, config->vocab_size);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  lk::coordinator::CoordinatorOptions co;
  co.model_id = absl::GetFlag(FLAGS_served_model_name);
  if (co.model_id.empty()) {
    std::filesystem::path p(dir);
    if (p.filename().empty()) p = p.parent_path();  // "dir/"
    co.model_id =
        p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
  }
  const bool adds_bos = (*tokenizer)->add_bos();
  co.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  {
    auto keys = lk::auth::ApiKeySet::Load(absl::GetFlag(FLAGS_api_key),
                                          absl::GetFlag(FLAGS_api_key_file));
    if (!keys.ok()) {
      std::fprintf(stderr, "%s\n", keys.status().ToString().c_str());
      return 2;
    }
    if (!keys->empty()) {
      co.api_keys = std::make_shared<const lk::auth::ApiKeySet>(*keys);
    }
  }
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
  const std::string host = absl::GetFlag(FLAGS_host);

  auto started = lk::metrics::MetricsServer::StartIfEnabled(
      host, absl::GetFlag(FLAGS_metrics_port));
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", started.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<lk::metrics::MetricsServer> metrics = std::move(*started);
  if (metrics == nullptr && absl::GetFlag(FLAGS_http_port) > 0) {
    // The HTTP API serves /metrics itself.
    metrics = lk::metrics::MetricsServer::WithoutEndpoint();
  }
  std::unique_ptr<lk::coordinator::CoordinatorMetrics> coord_metrics;
  if (metrics) {
    coord_metrics = std::make_unique<lk::coordinator::CoordinatorMetrics>(
        &coord, &metrics->registry());
    metrics->Add(coord_metrics->NewCollectable());
  }
  std::optional<lk::coordinator::http::ChatTemplate> chat_template;
  if (absl::GetFlag(FLAGS_http_port) > 0) {
    auto t =
        gguf ? GgufChatTemplate(*gguf, adds_bos)
             : lk::coordinator::http::ChatTemplate::FromModelDir(dir, adds_bos);
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 1;
    }
    chat_template = std::move(*t);
    const std::string parser = absl::GetFlag(FLAGS_tool_call_parser);
    if (parser == "hermes") {
      chat_template->set_tool_format(
          lk::coordinator::http::ToolCallFormat::kHermes);
    } else if (parser == "llama3_json") {
      chat_template->set_tool_format(
          lk::coordinator::http::ToolCallFormat::kLlama3Json);
    } else if (parser != "auto") {
      std::fprintf(stderr,
                   "--tool_call_parser must be auto, hermes or llama3_json\n");
      return 1;
    }
  }
  gguf.reset();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> public_credentials =
      grpc::InsecureServerCredentials();
  std::optional<lk::auth::TlsPem> public_tls;
  {
    auto pem = lk::auth::LoadTlsFiles(
        {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), ""},
        /*need_cert=*/false, /*need_ca=*/false);
    if (!pem.ok()) {
      std::fprintf(stderr, "--tls_cert/--tls_key: %s\n",
                   std::string(pem.status().message()).c_str());
      return 2;
    }
    if (!pem->cert_chain.empty()) {
      public_tls = std::move(*pem);
      public_credentials = lk::auth::TlsServerCredentials(
          *public_tls, /*require_client_cert=*/false);
    }
  }
  // Control on its own port, behind the cluster credentials: the public
  // port cannot register workers.
  const std::string internal_host = absl::GetFlag(FLAGS_internal_host).empty()
                                        ? host
                                        : absl::GetFlag(FLAGS_internal_host);
  grpc::ServerBuilder internal_builder;
  internal_builder.RegisterService(coord.control_service());
  auto internal_listening = lk::ListenAndStart(
      internal_builder, internal_host, absl::GetFlag(FLAGS_internal_port),
      lk::auth::InternalServerCredentials());
  if (!internal_listening.ok()) {
    std::fprintf(stderr, "%s\n",
                 internal_listening.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<grpc::Server> internal_server =
      std::move(internal_listening->server);
  const std::string internal_address =
      absl::StrCat(internal_host, ":", internal_listening->port);

  grpc::ServerBuilder builder;
  builder.RegisterService(coord.generation_service());
  // Reflection v1 beside grpc++'s v1alpha (its plugin, above); health
  // resolves through both: referencing a health message links its
  // descriptors (latentkv_health_proto) into the generated pool.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  lk::ReflectionV1Service reflection_v1(
      {"latentkv.v1.Generation", "grpc.health.v1.Health",
       "grpc.reflection.v1.ServerReflection",
       "grpc.reflection.v1alpha.ServerReflection"});
  builder.RegisterService(&reflection_v1);
  {
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(lk::coordinator::NewParseErrorInterceptorFactory());
    if (coord_metrics) {
      interceptors.push_back(coord_metrics->NewInterceptorFactory());
    }
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  auto listening = lk::ListenAndStart(builder, host, absl::GetFlag(FLAGS_port),
                                      public_credentials);
  if (!listening.ok()) {
    std::fprintf(stderr, "%s\n", listening.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<grpc::Server> server = std::move(listening->server);
  const int bound_port = listening->port;
  // Liveness here; readiness follows the registered workers (Coordinator).
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  lk::HealthReporter health_reporter(health, /*ready=*/false);
  coord.AttachHealth(health);
  const std::string address = absl::StrCat(host, ":", bound_port);
  std::fprintf(
      stderr, "latentkv-coordinator serving on %s%s (internal: %s%s)\n",
      address.c_str(), public_tls ? " with TLS" : "", internal_address.c_str(),
      lk::auth::HasClusterTls() ? " with mutual TLS" : "");

  // The HTTP API calls the Generation service through an in-process channel:
  // same admission, routing and metrics as gRPC clients.
  std::unique_ptr<lk::coordinator::http::HttpServer> http;
  if (chat_template) {
    const std::string origin = chat_template->origin();
    lk::coordinator::http::HttpServerOptions ho;
    ho.host = host;
    ho.port = absl::GetFlag(FLAGS_http_port);
    ho.threads = absl::GetFlag(FLAGS_http_threads);
    ho.request_deadline_s = absl::GetFlag(FLAGS_http_request_deadline_s);
    for (absl::string_view o :
         absl::StrSplit(absl::GetFlag(FLAGS_http_allowed_origins), ',',
                        absl::SkipEmpty())) {
      ho.allowed_origins.emplace_back(o);
    }
    ho.max_body_bytes = int64_t{absl::GetFlag(FLAGS_http_max_body_mb)} << 20;
    ho.max_queued = absl::GetFlag(FLAGS_http_max_queued);
    ho.model_id = co.model_id;
    ho.api_keys = co.api_keys;
    ho.max_context = config->max_position_embeddings;
    ho.ready = [&coord] { return coord.num_workers() > 0; };
    if (metrics) {
      ho.metrics_text = [m = metrics.get()] { return m->ScrapeText(); };
    }
    if (coord_metrics) {
      ho.on_response = [cm = coord_metrics.get()](const std::string& route,
                                                  int status,
                                                  const std::string& reason) {
        cm->RecordHttp(route, status, reason);
      };
    }
    if (public_tls) ho.tls = *public_tls;
    auto h = lk::coordinator::http::HttpServer::Start(
        ho, server->InProcessChannel(grpc::ChannelArguments()),
        std::move(*chat_template));
    if (!h.ok()) {
      std::fprintf(stderr, "%s\n", h.status().ToString().c_str());
      server->Shutdown();
      return 1;
    }
    http = std::move(*h);
    std::fprintf(stderr,
                 "latentkv-coordinator: OpenAI HTTP API on %s:%d (chat "
                 "template: %s)\n",
                 host.c_str(), http->port(), origin.c_str());
  }
  if (metrics && metrics->port() > 0) {
    std::fprintf(stderr, "latentkv-coordinator: metrics on %s:%d/metrics\n",
                 host.c_str(), metrics->port());
  }
  lk::WriteAddressFile(absl::GetFlag(FLAGS_internal_port_file),
                       internal_address);
  lk::WriteAddressFile(absl::GetFlag(FLAGS_port_file), address);
  const int sig = lk::WaitForTerminationSignal();
  std::fprintf(stderr, "latentkv-coordinator: signal %d, draining\n", sig);
  // Draining: health says so at once (readiness no longer follows the
  // workers); HTTP stops accepting and finishes its requests, then gRPC
  // requests in flight finish, all within --drain_seconds.
  const auto deadline =
      std::chrono::system_clock::now() +
      std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds));
  coord.AttachHealth(nullptr);
  health_reporter.Drain();
  health->SetServingStatus("latentkv.v1.Generation", false);
  if (http) {
    http->Stop(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::system_clock::now()));
    http.reset();  // an open in-process channel would hold up Shutdown
  }
  while (coord.inflight() > 0 && std::chrono::system_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  server->Shutdown(deadline);
  internal_server->Shutdown(std::chrono::system_clock::now());
  coord.Stop();
  return 0;
}
