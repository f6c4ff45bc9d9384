#include "tools/bench/fake_server.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "grpcpp/alarm.h"

namespace latentkv::bench {

namespace pb = ::latentkv::v1;

// One Generate stream. At most one thing is outstanding at a time (a write
// or an alarm), so OnDone, which deletes it, never races an alarm.
class FakeGenerationServer::Stream
    : public grpc::ServerWriteReactor<pb::GenerateResponse> {
 public:
  Stream(FakeGenerationServer* server, const pb::GenerateRequest* req)
      : server_(server),
        total_(static_cast<int32_t>(req->sampling().max_tokens())),
        prompt_tokens_(req->prompt_token_ids_size()) {
    const FakeServerOptions& o = server->options_;
    const int64_t n = server->requests_.fetch_add(1) + 1;
    if (o.fail_every > 0 && n % o.fail_every == 0) {
      Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "fake server sheds this one"));
      return;
    }
    if (total_ <= 0) total_ = 16;
    After(o.first_delay);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client gone"));
      return;
    }
    After(server_->options_.interval);
  }

  void OnDone() override { delete this; }

 private:
  // Writes the next message after `delay` (at once when zero).
  void After(std::chrono::microseconds delay) {
    if (delay.count() <= 0) {
      WriteNext();
      return;
    }
    alarm_.Set(std::chrono::system_clock::now() + delay, [this](bool ok) {
      if (ok) {
        WriteNext();
      } else {
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "alarm cancelled"));
      }
    });
  }

  void WriteNext() {
    resp_.Clear();
    const int32_t k =
        std::min(server_->options_.tokens_per_message, total_ - sent_);
    for (int32_t i = 0; i < k; ++i) resp_.add_token_ids(sent_++);
    server_->messages_.fetch_add(1);
    if (sent_ < total_) {
      StartWrite(&resp_);
      return;
    }
    resp_.set_finish_reason(pb::FINISH_REASON_LENGTH);
    resp_.mutable_usage()->set_prompt_tokens(prompt_tokens_);
    resp_.mutable_usage()->set_completion_tokens(total_);
    StartWriteAndFinish(&resp_, grpc::WriteOptions(), grpc::Status::OK);
  }

  FakeGenerationServer* server_;
  int32_t total_;
  int32_t prompt_tokens_;
  int32_t sent_ = 0;
  pb::GenerateResponse resp_;
  grpc::Alarm alarm_;
};

class FakeGenerationServer::Service : public pb::Generation::CallbackService {
 public:
  explicit Service(FakeGenerationServer* server) : server_(server) {}

  grpc::ServerWriteReactor<pb::GenerateResponse>* Generate(
      grpc::CallbackServerContext*, const pb::GenerateRequest* req) override {
    return new Stream(server_, req);
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const pb::TokenizeRequest* req,
                                     pb::TokenizeResponse* resp) override {
    if (req->add_bos()) resp->add_token_ids(1);
    const int32_t span = server_->options_.vocab_size - 3;
    for (unsigned char b : req->text()) resp->add_token_ids(3 + b % span);
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const pb::ListModelsRequest*,
                                       pb::ListModelsResponse* resp) override {
    pb::ModelInfo* m = resp->add_models();
    m->set_id("fake");
    m->set_vocab_size(server_->options_.vocab_size);
    m->set_max_context(server_->options_.max_context);
    m->set_num_workers(1);
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

 private:
  FakeGenerationServer* server_;
};

FakeGenerationServer::FakeGenerationServer(const FakeServerOptions& options)
    : options_(options), service_(std::make_unique<Service>(this)) {
  options_.tokens_per_message = std::max(1, options_.tokens_per_message);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    std::fprintf(stderr, "fake server: cannot listen on 127.0.0.1\n");
    std::abort();
  }
  address_ = "127.0.0.1:" + std::to_string(port);
}

FakeGenerationServer::~FakeGenerationServer() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
}

}  // namespace latentkv::bench
