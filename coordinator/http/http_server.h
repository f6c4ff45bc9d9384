// The coordinator's OpenAI-compatible HTTP API (cpp-httplib):
//   POST /v1/completions, POST /v1/chat/completions   (stream or not)
//   GET  /v1/models, /v1/models/{id}
//   GET  /health (ready: 200 or 503), /health/live, /metrics (optional)
//   POST /tokenize, /detokenize (vLLM's shapes: utility_api.h)
//   POST /v1/embeddings (embeddings_api.h)
// Request and response formats are in openai_api.h; chat messages become a
// prompt through chat_template.h.
//
// Every request goes through the coordinator's own latentkv.v1.Generation
// service over `channel` (an in-process channel to the coordinator's gRPC
// server), so HTTP requests take the same validation, admission
// (--max_inflight), routing, retries and metrics as gRPC clients.
//
// Responses: a non-streamed request gets its JSON once generation ends;
// "stream": true gets server-sent events ("data: <chunk>\n\n" per message,
// then the usage chunk if stream_options.include_usage, then
// "data: [DONE]\n\n"). Errors before the first token get the status of the
// gRPC error (openai_api.h: FromGrpcStatus); an error after it ends the
// stream with a "data: {"error": ...}" event and [DONE].
//
// TLS: with options.tls the port speaks HTTPS only (a plaintext request
// gets its connection closed).
//
// Bounds: `threads` connection threads and `max_queued` waiting connections
// (http_support.h: BoundedTaskQueue); a connection beyond them gets 429.
// A client that closes its connection cancels its gRPC call (and so the
// worker's request) within about 50 ms.
// Thread-safety: Start and Stop from one thread.
#ifndef LATENTKV_COORDINATOR_HTTP_HTTP_SERVER_H_
#define LATENTKV_COORDINATOR_HTTP_HTTP_SERVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/auth/api_keys.h"
#include "common/auth/tls.h"
#include "coordinator/http/chat_template.h"
#include "coordinator/http/http_support.h"
#include "coordinator/http/request_deadline.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "latentkv/v1/generation.grpc.pb.h"

namespace latentkv::coordinator::http {

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // address to bind
  int port = 0;                    // 0: any free port (see port())
  // Connection threads; each serves one connection at a time, and a
  // generating request holds its thread until it ends. >= 1, default 64.
  int threads = 64;
  // Accepted connections waiting for a thread; past it, 429. >= 0,
  // default 64.
  int max_queued = 64;
  // The served model: requests naming another get 404. Required.
  std::string model_id;
  // The model's context; a chat request without max_tokens may use what its
  // prompt leaves of it. > 0.
  int64_t max_context = 0;
  // Seconds to wait for a request's bytes, and an idle keep-alive
  // connection's next request. Default 30 and 5.
  int read_timeout_s = 30;
  int keep_alive_s = 5;
  // Largest request body; a longer one is answered 413 (its bytes are
  // skipped, never stored). Default 2 MiB: a full 128k-token context is
  // ~0.5 MB of text, and the request must also fit gRPC's 4 MiB messages.
  int64_t max_body_bytes = int64_t{2} << 20;
  // Accept queue of the listening socket. Default 1024 (the kernel caps it
  // at net.core.somaxconn).
  int listen_backlog = 1024;
  // Seconds a connection may take to deliver a whole request (headers and
  // body) after it opens or its previous response ends; then it is shut
  // down (request_deadline.h: slowloris). Default 30.
  int request_deadline_s = 30;
  // Origins (scheme://host[:port], or "*") whose web pages may call the API
  // (CORS: preflights answered, Access-Control-Allow-Origin set). Requests
  // carrying any other Origin get 403. Default: none.
  std::vector<std::string> allowed_origins;
  // API keys (common/auth/api_keys.h): every route answers 401 without a
  // valid "Authorization: Bearer <key>", which is then forwarded to the
  // Generation service. Null or empty: no authentication.
  std::shared_ptr<const auth::ApiKeySet> api_keys;
  // Whether the coordinator can serve (a worker is registered): GET /health
  // answers 200 then, 503 otherwise. Null: always 200.
  std::function<bool()> ready;
  // The Prometheus text of the coordinator's metrics for GET /metrics on
  // this port (behind the API key when keys are set). Null: no /metrics.
  std::function<std::string()> metrics_text;
  // Called after every response (any route, any layer: 401, 403, 413, 429
  // included) with the route ("other" for unknown paths), the status and,
  // for errors, the OpenAI error code or type. Null: nothing.
  std::function<void(const std::string& route, int status,
                     const std::string& reason)>
      on_response;
  // TLS (common/auth/tls.h: certificate chain and key, checked by
  // LoadTlsFiles): HTTPS only, TLS 1.2 or newer. Unset: plain HTTP.
  std::optional<auth::TlsPem> tls;
};

class HttpServer {
 public:
  // Binds and starts serving on its own threads. `channel` reaches the
  // latentkv.v1.Generation service. UNAVAILABLE when the port cannot be
  // bound; INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const HttpServerOptions& options, std::shared_ptr<grpc::Channel> channel,
      ChatTemplate chat_template);
  ~HttpServer();  // Stop()s with no grace

  int port() const { return port_; }
  // Stops accepting connections, lets requests in flight finish for up to
  // `grace`, cancels the rest and joins every thread. Idempotent.
  void Stop(std::chrono::milliseconds grace);
  // Requests currently being answered (for draining and tests).
  int64_t active() const { return active_.load(); }

 private:
  HttpServer() = default;
  struct Call;
  void HandleGenerate(const httplib::Request& req, httplib::Response& res,
                      bool chat);
  void HandleModels(const httplib::Request& req, httplib::Response& res);
  // ListModels on behalf of `req` (its key forwarded).
  grpc::Status ListModelsFor(const httplib::Request& req,
                             latentkv::v1::ListModelsResponse* models);
  // http_server_utility.cc: /health, /health/live, /v1/models/{id},
  // /tokenize, /detokenize, /metrics.
  void RegisterUtilityRoutes(httplib::Server& svr);
  void HandleModel(const httplib::Request& req, httplib::Response& res);
  void HandleTokenize(const httplib::Request& req, httplib::Response& res);
  void HandleDetokenize(const httplib::Request& req, httplib::Response& res);
  // POST /v1/embeddings (embeddings_api.h): one Embed call per input, all
  // in flight at once.
  void HandleEmbeddings(const httplib::Request& req, httplib::Response& res);
  // The response id for a new request.
  std::string NewId(bool chat);

  HttpServerOptions options_;
  ChatTemplate chat_template_;
  std::unique_ptr<latentkv::v1::Generation::Stub> stub_;
  std::unique_ptr<httplib::Server> server_;    // an SSLServer with options.tls
  std::unique_ptr<RequestDeadline> deadline_;  // set before serving
  std::unique_ptr<HangupWatcher> watcher_;
  std::thread listener_;
  int port_ = 0;
  std::atomic<int64_t> active_{0};
  std::atomic<uint64_t> next_id_{0};
  uint64_t id_prefix_ = 0;
  std::atomic<bool> stopped_{false};
  // Calls in flight, cancelled when Stop's grace runs out.
  std::mutex calls_mu_;
  std::set<grpc::ClientContext*> calls_;  // guarded by calls_mu_
};

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_HTTP_SERVER_H_
