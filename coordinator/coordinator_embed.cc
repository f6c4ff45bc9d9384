// Generation.Embed: an input's embedding from a worker (the prompt run
// with WorkerGenerateRequest.embed), normalized here. Admission, routing
// and retries as for Generate.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/auth/cluster_secret.h"
#include "common/generation_rules.h"
#include "coordinator/coordinator_service.h"

namespace latentkv::coordinator {

namespace pb = ::latentkv::v1;

grpc::Status Coordinator::GenerationImpl::Embed(grpc::ServerContext* ctx,
                                                const pb::EmbedRequest* req,
                                                pb::EmbedResponse* resp) {
  if (grpc::Status st = c_->Authenticate(*ctx); !st.ok()) return st;
  Coordinator& c = *c_;
  std::vector<int32_t> prompt;
  if (req->input_token_ids_size() > 0) {
    prompt.assign(req->input_token_ids().begin(), req->input_token_ids().end());
  } else if (!req->input().empty()) {
    if (grpc::Status st = c.CheckTextBytes(req->input(), "input"); !st.ok()) {
      return st;
    }
    prompt = c.tokenizer_->Encode(req->input(), c.tokenizer_->add_bos());
  }
  // The rules of a one-token greedy generation: ids in the vocabulary, the
  // input within the context (with the one position the worker reserves).
  const absl::Status valid = ValidateGeneration(
      {.prompt = prompt, .max_new_tokens = 1, .temperature = 0, .top_p = 1},
      {.vocab_size = c.config_.vocab_size,
       .context = c.config_.max_position_embeddings});
  if (!valid.ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("input: ", valid.message()));
  }
  if (const uint32_t served = c.registry_.MaxContext();
      served > 0 && prompt.size() + 1 > served) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("input (", prompt.size(), " tokens) exceeds the ",
                     served - 1,
                     " tokens the largest worker's KV memory holds"));
  }
  grpc::Status admitted;
  const std::unique_ptr<InflightSlot> slot = c.TakeInflightSlot(&admitted);
  if (slot == nullptr) return admitted;
  const std::string request_id =
      req->request_id().empty()
          ? absl::StrCat("emb-", c.next_request_.fetch_add(1))
          : req->request_id();
  const RouteHint hint{static_cast<int64_t>(prompt.size()), nullptr,
                       static_cast<int64_t>(prompt.size()) + 1};
  std::set<std::string> tried;
  for (int attempt = 0; attempt < c.options_.max_attempts; ++attempt) {
    std::optional<WorkerInfo> w = c.registry_.Acquire(tried, hint);
    if (!w) break;
    tried.insert(w->id);
    InflightGuard guard(&c.registry_, w->id, hint.prompt_tokens);
    pb::WorkerGenerateRequest wreq;
    wreq.set_request_id(request_id);
    *wreq.mutable_prompt_token_ids() = {prompt.begin(), prompt.end()};
    wreq.mutable_sampling()->set_max_tokens(1);
    wreq.mutable_sampling()->set_temperature(0);
    wreq.mutable_sampling()->set_top_p(1);
    wreq.set_embed(true);
    std::unique_ptr<grpc::ClientContext> wctx =
        grpc::ClientContext::FromServerContext(*ctx);
    auth::AttachClusterSecret(wctx.get());
    auto reader = c.StubFor(w->address)->Generate(wctx.get(), wreq);
    pb::WorkerGenerateResponse wresp;
    std::vector<float> embedding;
    bool finished = false;
    while (reader->Read(&wresp)) {
      if (wresp.embedding_size() > 0) {
        embedding.assign(wresp.embedding().begin(), wresp.embedding().end());
      }
      if (wresp.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
        finished = true;
      }
    }
    grpc::Status st = reader->Finish();
    if (ctx->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
    }
    if (st.ok()) {
      if (!finished ||
          embedding.size() != static_cast<size_t>(c.config_.hidden_size)) {
        return grpc::Status(grpc::StatusCode::INTERNAL,
                            "the worker sent no embedding of the model's "
                            "hidden size");
      }
      double norm = 0;
      for (const float v : embedding) norm += double{v} * v;
      norm = std::sqrt(norm);
      for (const float v : embedding) {
        if (!std::isfinite(v)) {
          return grpc::Status(grpc::StatusCode::INTERNAL,
                              "the worker sent a non-finite embedding");
        }
        resp->add_embedding(norm > 0 ? static_cast<float>(v / norm) : 0.0f);
      }
      resp->set_prompt_tokens(static_cast<uint32_t>(prompt.size()));
      return grpc::Status::OK;
    }
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) return st;
    c.DropFailedWorker(w->id, st, request_id);
  }
  return NoWorkerStatus(tried);
}

}  // namespace latentkv::coordinator
