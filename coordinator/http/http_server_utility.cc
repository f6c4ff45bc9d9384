// The HTTP server's routes beside the completions (http_server.h): health,
// one model, embeddings, tokenize, detokenize, metrics.
#include <condition_variable>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "coordinator/http/embeddings_api.h"
#include "coordinator/http/http_server.h"
#include "coordinator/http/response_util.h"
#include "coordinator/http/utility_api.h"

namespace latentkv::coordinator::http {

namespace pb = ::latentkv::v1;

void HttpServer::RegisterUtilityRoutes(httplib::Server& svr) {
  HttpServer* self = this;
  // Health needs no key and skips the connection bound (http_server.cc's
  // pre-routing handler): orchestrators probe it under any load.
  svr.Get("/health/live", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"live"})", kJson);
  });
  svr.Get("/health", [self](const httplib::Request&, httplib::Response& res) {
    const bool ready = !self->options_.ready || self->options_.ready();
    res.status = ready ? 200 : 503;
    res.set_content(ready ? R"({"status":"ready"})"
                          : R"({"status":"not ready","reason":"no worker"})",
                    kJson);
  });
  svr.Get(R"(/v1/models/(.+))",
          [self](const httplib::Request& req, httplib::Response& res) {
            self->HandleModel(req, res);
          });
  svr.Post("/v1/embeddings",
           [self](const httplib::Request& req, httplib::Response& res) {
             self->HandleEmbeddings(req, res);
           });
  svr.Post("/tokenize",
           [self](const httplib::Request& req, httplib::Response& res) {
             self->HandleTokenize(req, res);
           });
  svr.Post("/detokenize",
           [self](const httplib::Request& req, httplib::Response& res) {
             self->HandleDetokenize(req, res);
           });
  if (options_.metrics_text) {
    svr.Get("/metrics",
            [self](const httplib::Request&, httplib::Response& res) {
              res.set_content(self->options_.metrics_text(),
                              "text/plain; version=0.0.4; charset=utf-8");
            });
  }
}

void HttpServer::HandleModel(const httplib::Request& req,
                             httplib::Response& res) {
  pb::ListModelsResponse models;
  grpc::Status st = ListModelsFor(req, &models);
  if (!st.ok()) return SetError(res, FromGrpcStatus(st));
  const std::string id = req.matches[1];
  for (const pb::ModelInfo& m : models.models()) {
    if (m.id() == id) {
      res.set_content(ModelObject(m, absl::ToUnixSeconds(absl::Now())).dump(),
                      kJson);
      return;
    }
  }
  ApiError e = Simple(404, "The model '" + id + "' does not exist",
                      "invalid_request_error", "model_not_found");
  e.param = "model";
  SetError(res, e);
}

void HttpServer::HandleTokenize(const httplib::Request& req,
                                httplib::Response& res) {
  TokenizeBody body;
  if (auto e = ParseTokenizeBody(req.body, &body)) return SetError(res, *e);
  if (!body.model.empty() && body.model != options_.model_id) {
    return SetError(res,
                    Simple(404, "The model '" + body.model + "' does not exist",
                           "invalid_request_error", "model_not_found"));
  }
  pb::TokenizeRequest treq;
  if (body.prompt) {
    treq.set_text(*body.prompt);
  } else {
    auto prompt = chat_template_.Render(body.messages, body.tools);
    if (!prompt.ok()) {
      ApiError e;
      e.message = std::string(prompt.status().message());
      e.param = "messages";
      return SetError(res, e);
    }
    treq.set_text(*prompt);
  }
  treq.set_add_bos(body.add_special_tokens);
  grpc::ClientContext tctx;
  ForwardAuthorization(req, &tctx);
  pb::TokenizeResponse tresp;
  grpc::Status st = stub_->Tokenize(&tctx, treq, &tresp);
  if (!st.ok()) return SetError(res, FromGrpcStatus(st));
  pb::ListModelsResponse models;
  int64_t context = options_.max_context;
  if (ListModelsFor(req, &models).ok() && models.models_size() > 0) {
    context = models.models(0).max_context();
  }
  res.set_content(TokenizeJson(std::vector<int32_t>(tresp.token_ids().begin(),
                                                    tresp.token_ids().end()),
                               context),
                  kJson);
}

void HttpServer::HandleDetokenize(const httplib::Request& req,
                                  httplib::Response& res) {
  DetokenizeBody body;
  if (auto e = ParseDetokenizeBody(req.body, &body)) return SetError(res, *e);
  pb::DetokenizeRequest dreq;
  for (int32_t t : body.tokens) dreq.add_token_ids(t);
  grpc::ClientContext ctx;
  ForwardAuthorization(req, &ctx);
  pb::DetokenizeResponse dresp;
  grpc::Status st = stub_->Detokenize(&ctx, dreq, &dresp);
  if (!st.ok()) return SetError(res, FromGrpcStatus(st));
  res.set_content(DetokenizeJson(dresp.text()), kJson);
}

void HttpServer::HandleEmbeddings(const httplib::Request& req,
                                  httplib::Response& res) {
  EmbeddingsBody body;
  if (auto e = ParseEmbeddingsBody(req.body, &body)) return SetError(res, *e);
  if (!body.model.empty() && body.model != options_.model_id) {
    ApiError e = Simple(404, "The model '" + body.model + "' does not exist",
                        "invalid_request_error", "model_not_found");
    e.param = "model";
    return SetError(res, e);
  }
  // Every input at once (the workers batch them), through the callback
  // API: no thread per input.
  const size_t k = body.inputs.size();
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs(k);
  std::vector<pb::EmbedRequest> reqs(k);
  std::vector<pb::EmbedResponse> resps(k);
  std::vector<grpc::Status> status(k);
  std::mutex mu;
  std::condition_variable cv;
  size_t left = k;
  for (size_t i = 0; i < k; ++i) {
    ctxs[i] = std::make_unique<grpc::ClientContext>();
    ForwardAuthorization(req, ctxs[i].get());
    if (body.inputs[i].token_ids.empty()) {
      reqs[i].set_input(body.inputs[i].text);
    } else {
      *reqs[i].mutable_input_token_ids() = {body.inputs[i].token_ids.begin(),
                                            body.inputs[i].token_ids.end()};
    }
    stub_->async()->Embed(ctxs[i].get(), &reqs[i], &resps[i],
                          [&, i](grpc::Status s) {
                            std::lock_guard<std::mutex> lock(mu);
                            status[i] = std::move(s);
                            if (--left == 0) cv.notify_all();
                          });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return left == 0; });
  }
  std::vector<std::vector<float>> vectors;
  int64_t tokens = 0;
  for (size_t i = 0; i < k; ++i) {
    if (!status[i].ok()) {
      ApiError e = FromGrpcStatus(status[i]);
      if (k > 1) e.message = absl::StrCat("input ", i, ": ", e.message);
      e.param = e.http_status == 400 ? "input" : "";
      return SetError(res, e);
    }
    vectors.emplace_back(resps[i].embedding().begin(),
                         resps[i].embedding().end());
    tokens += resps[i].prompt_tokens();
  }
  if (body.dimensions &&
      *body.dimensions != static_cast<int64_t>(vectors[0].size())) {
    ApiError e = Simple(
        400,
        absl::StrCat("'dimensions' must be the model's hidden size, ",
                     vectors[0].size(), " (embeddings are not truncated)"),
        "invalid_request_error", "");
    e.param = "dimensions";
    return SetError(res, e);
  }
  res.set_content(
      EmbeddingsJson(options_.model_id, vectors, tokens, body.base64), kJson);
}

}  // namespace latentkv::coordinator::http
