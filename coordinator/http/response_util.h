// What the HTTP server's handlers share (http_server.cc and
// http_server_utility.cc): forwarding the client's key, writing errors in
// OpenAI's shape.
// Thread-safety: pure functions.
#ifndef LATENTKV_COORDINATOR_HTTP_RESPONSE_UTIL_H_
#define LATENTKV_COORDINATOR_HTTP_RESPONSE_UTIL_H_

#include <string>

#include "coordinator/http/openai_api.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"

namespace latentkv::coordinator::http {

inline constexpr char kJson[] = "application/json";

// The client's API key goes on to the Generation service, which checks it
// again (the HTTP API adds no access of its own).
inline void ForwardAuthorization(const httplib::Request& req,
                                 grpc::ClientContext* ctx) {
  const std::string auth = req.get_header_value("Authorization");
  if (!auth.empty()) ctx->AddMetadata("authorization", auth);
}

inline void SetError(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(ErrorJson(e), kJson);
}

inline ApiError Simple(int status, std::string message, std::string type,
                       std::string code) {
  ApiError e;
  e.http_status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_RESPONSE_UTIL_H_
