// One in-flight Generate call of the HTTP server (internal to
// coordinator/http): registered with the server (for Stop's cancellation and
// the active count) for its lifetime; cancelled and drained when dropped
// unfinished.
// Thread-safety: one thread reads a call; ctx.TryCancel may come from any.
#ifndef LATENTKV_COORDINATOR_HTTP_HTTP_CALL_H_
#define LATENTKV_COORDINATOR_HTTP_HTTP_CALL_H_

#include <memory>

#include "coordinator/http/http_server.h"
#include "coordinator/http/http_support.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/generation.grpc.pb.h"

namespace latentkv::coordinator::http {

struct HttpServer::Call {
  explicit Call(HttpServer* s) : server(s) {
    ++server->active_;
    std::lock_guard<std::mutex> lock(server->calls_mu_);
    server->calls_.insert(&ctx);
  }
  ~Call() {
    server->watcher_->Unwatch(watch);
    if (reader != nullptr && !finished) {
      ctx.TryCancel();
      Finish();
    }
    {
      std::lock_guard<std::mutex> lock(server->calls_mu_);
      server->calls_.erase(&ctx);
    }
    --server->active_;
  }
  // Ends the call (draining what is left) and returns its status.
  grpc::Status Finish() {
    latentkv::v1::GenerateResponse ignored;
    while (reader->Read(&ignored)) {
    }
    finished = true;
    return reader->Finish();
  }

  HttpServer* server;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<latentkv::v1::GenerateResponse>> reader;
  bool finished = false;
  int64_t watch = -1;
};

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_HTTP_CALL_H_
