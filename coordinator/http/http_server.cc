#include "coordinator/http/http_server.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/metrics/listen_socket.h"
#include "coordinator/http/http_call.h"
#include "coordinator/http/openai_api.h"
#include "coordinator/http/response_util.h"

namespace latentkv::coordinator::http {
namespace {

namespace pb = ::latentkv::v1;

// Sets up a server context from PEM text: TLS 1.2+, the leaf and its chain,
// the private key.
bool ConfigureTlsContext(const auth::TlsPem& pem, SSL_CTX& ctx) {
  SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
  BIO* cert_bio = BIO_new_mem_buf(pem.cert_chain.data(),
                                  static_cast<int>(pem.cert_chain.size()));
  bool ok = false;
  if (X509* leaf = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr)) {
    ok = SSL_CTX_use_certificate(&ctx, leaf) == 1;
    X509_free(leaf);
    while (X509* extra =
               PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr)) {
      if (SSL_CTX_add0_chain_cert(&ctx, extra) != 1) {  // takes it when 1
        X509_free(extra);
        ok = false;
      }
    }
    ERR_clear_error();  // the end of the PEM stream
  }
  BIO_free(cert_bio);
  BIO* key_bio = BIO_new_mem_buf(pem.private_key.data(),
                                 static_cast<int>(pem.private_key.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  ok = ok && key != nullptr && SSL_CTX_use_PrivateKey(&ctx, key) == 1 &&
       SSL_CTX_check_private_key(&ctx) == 1;
  EVP_PKEY_free(key);
  return ok;
}

// The route label of `path`: one of ours, or "other" (arbitrary paths
// must not grow the metrics' label sets).
std::string RouteName(const std::string& path) {
  for (const char* r : {"/v1/completions", "/v1/chat/completions", "/v1/models",
                        "/health", "/health/live", "/tokenize", "/detokenize",
                        "/metrics", "/v1/embeddings"}) {
    if (path == r) return r;
  }
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

// The OpenAI error code (else type) of an error body, or "".
std::string ErrorReason(const std::string& body) {
  const nlohmann::json j =
      nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("error") || !j["error"].is_object()) {
    return "";
  }
  const nlohmann::json& e = j["error"];
  for (const char* key : {"code", "type"}) {
    if (e.contains(key) && e[key].is_string()) return e[key].get<std::string>();
  }
  return "";
}

}  // namespace

// One generation in flight: its gRPC call, the hang-up watch on its HTTP
// connection, and its registration with the server (for Stop).

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpServerOptions& options, std::shared_ptr<grpc::Channel> channel,
    ChatTemplate chat_template) {
  if (options.threads < 1 || options.max_queued < 0 ||
      options.model_id.empty() || options.max_context <= 0 ||
      options.port < 0 || options.port > 65535 || options.max_body_bytes < 1) {
    return absl::InvalidArgumentError(
        "http server: threads >= 1, max_queued >= 0, a model id, a context, "
        "a port in [0, 65535] and a positive body limit are required");
  }
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->options_ = options;
  s->chat_template_ = std::move(chat_template);
  s->stub_ = pb::Generation::NewStub(std::move(channel));
  s->watcher_ = std::make_unique<HangupWatcher>();
  s->id_prefix_ = std::random_device()();
  if (options.tls) {
    const auth::TlsPem pem = *options.tls;
    auto ssl = std::make_unique<httplib::SSLServer>(
        [pem](SSL_CTX& ctx) { return ConfigureTlsContext(pem, ctx); });
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(
          "http server: the TLS certificate or key was refused");
    }
    s->server_ = std::move(ssl);
  } else {
    s->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& svr = *s->server_;
  const int threads = options.threads, queued = options.max_queued;
  svr.new_task_queue = [threads, queued] {
    return new BoundedTaskQueue(threads, queued);
  };
  svr.set_read_timeout(options.read_timeout_s, 0);
  svr.set_socket_options(ExclusiveListenOptions);
  svr.set_keep_alive_timeout(options.keep_alive_s);
  svr.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  std::shared_ptr<const auth::ApiKeySet> keys = options.api_keys;
  HttpServer* owner = s.get();
  svr.set_logger(
      [owner](const httplib::Request& req, const httplib::Response& res) {
        if (owner->deadline_ != nullptr) {
          owner->deadline_->Done(req.remote_addr, req.remote_port);
        }
        if (owner->options_.on_response) {
          owner->options_.on_response(
              RouteName(req.path), res.status,
              res.status >= 400 ? ErrorReason(res.body) : std::string());
        }
      });
  const std::vector<std::string> origins = options.allowed_origins;
  svr.set_pre_routing_handler([keys, owner, origins](
                                  const httplib::Request& req,
                                  httplib::Response& res) {
    if (owner->deadline_ != nullptr) {
      owner->deadline_->Begin(req.remote_addr, req.remote_port);
    }
    // Orchestrators' probes: no key, no connection bound, no origin rule.
    if (req.path == "/health" || req.path == "/health/live") {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    // Browsers: only from allowed origins (a preflight needs no key).
    if (const std::string origin = req.get_header_value("Origin");
        !origin.empty()) {
      if (!OriginAllowed(origin, origins)) {
        SetError(res, Simple(403,
                             absl::StrCat("requests from web pages of ", origin,
                                          " are not allowed"),
                             "invalid_request_error", "origin_not_allowed"));
        return httplib::Server::HandlerResponse::Handled;
      }
      res.set_header("Access-Control-Allow-Origin", origin);
      res.set_header("Vary", "Origin");
      if (req.method == "OPTIONS") {
        res.status = 204;
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers",
                       "Authorization, Content-Type");
        res.set_header("Access-Control-Max-Age", "600");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (BoundedTaskQueue::Overloaded()) {
      SetError(res, Simple(429, "the HTTP server is at its connection limit",
                           "rate_limit_error", "rate_limit_exceeded"));
      res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (keys != nullptr) {
      const absl::Status st =
          keys->CheckBearer(req.get_header_value("Authorization"));
      if (!st.ok()) {
        // OpenAI's answer to a missing or wrong key.
        SetError(res, Simple(401, std::string(st.message()),
                             "invalid_request_error", "invalid_api_key"));
        res.set_header("WWW-Authenticate", "Bearer");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  HttpServer* self = s.get();
  svr.Post("/v1/completions",
           [self](const httplib::Request& req, httplib::Response& res) {
             self->HandleGenerate(req, res, /*chat=*/false);
           });
  svr.Post("/v1/chat/completions",
           [self](const httplib::Request& req, httplib::Response& res) {
             self->HandleGenerate(req, res, /*chat=*/true);
           });
  svr.Get("/v1/models",
          [self](const httplib::Request& req, httplib::Response& res) {
            self->HandleModels(req, res);
          });
  s->RegisterUtilityRoutes(svr);
  // Unrouted paths and httplib's own errors get OpenAI-shaped bodies too.
  svr.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty())
          return httplib::Server::HandlerResponse::Unhandled;
        const bool unrouted = res.status == 404;
        SetError(res,
                 Simple(res.status,
                        unrouted ? absl::StrCat("no route for ", req.method,
                                                " ", req.path)
                                 : absl::StrCat("HTTP error ", res.status),
                        "invalid_request_error", unrouted ? "not_found" : ""));
        return httplib::Server::HandlerResponse::Handled;
      }));
  svr.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        SetError(res, Simple(500, "internal error", "server_error", ""));
      });
  if (options.port == 0) {
    s->port_ = svr.bind_to_any_port(options.host);
  } else if (svr.bind_to_port(options.host, options.port)) {
    s->port_ = options.port;
  }
  // A deep accept queue, like the gRPC port's: bursts wait for a thread
  // (or get 429 from the bounded queue) instead of being dropped.
  if (s->port_ > 0) {
    RaiseListenBacklog(s->port_, options.listen_backlog);
    s->deadline_ = std::make_unique<RequestDeadline>(
        s->port_, std::chrono::seconds(options.request_deadline_s));
  }
  if (s->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat(
        "http server cannot listen on ", options.host, ":", options.port));
  }
  s->listener_ = std::thread([self] { self->server_->listen_after_bind(); });
  while (!svr.is_running()) absl::SleepFor(absl::Milliseconds(1));
  return s;
}

HttpServer::~HttpServer() { Stop(std::chrono::milliseconds(0)); }

void HttpServer::Stop(std::chrono::milliseconds grace) {
  if (stopped_.exchange(true)) return;
  server_->stop();  // no new connections; the listener drains its threads
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (active_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  {
    std::lock_guard<std::mutex> lock(calls_mu_);
    for (grpc::ClientContext* ctx : calls_) ctx->TryCancel();
  }
  if (listener_.joinable()) listener_.join();
  watcher_.reset();
}

std::string HttpServer::NewId(bool chat) {
  return absl::StrFormat("%s-%08x%08x", chat ? "chatcmpl" : "cmpl",
                         id_prefix_ & 0xffffffffu, next_id_.fetch_add(1));
}

grpc::Status HttpServer::ListModelsFor(const httplib::Request& req,
                                       pb::ListModelsResponse* models) {
  grpc::ClientContext ctx;
  ForwardAuthorization(req, &ctx);
  return stub_->ListModels(&ctx, {}, models);
}

void HttpServer::HandleModels(const httplib::Request& req,
                              httplib::Response& res) {
  pb::ListModelsResponse models;
  grpc::Status st = ListModelsFor(req, &models);
  if (!st.ok()) return SetError(res, FromGrpcStatus(st));
  res.set_content(ModelsJson(models, absl::ToUnixSeconds(absl::Now())), kJson);
}

}  // namespace latentkv::coordinator::http
