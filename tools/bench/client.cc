#include "tools/bench/client.h"

#include <algorithm>

namespace latentkv::bench {

namespace pb = ::latentkv::v1;

std::string StatusCodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  if (c >= 0 && c < static_cast<int>(std::size(kNames))) return kNames[c];
  return "CODE_" + std::to_string(c);
}

// One Generate in flight. It has at most one operation outstanding on the
// queue at a time, so `op` says what a completed tag means.
struct StreamingClient::Call {
  enum class Op { kStart, kRead, kFinish };
  Op op = Op::kStart;
  grpc::ClientContext ctx;
  pb::GenerateResponse resp;
  std::unique_ptr<grpc::ClientAsyncReader<pb::GenerateResponse>> reader;
  grpc::Status status;
  Clock::time_point sent;
  RequestRecord record;
  Done done;
};

StreamingClient::StreamingClient(const ClientOptions& options)
    : options_(options) {
  const int32_t channels = std::max<int32_t>(1, options.channels);
  for (int32_t i = 0; i < channels; ++i) {
    grpc::ChannelArguments args;
    // Separate connections: without this, equal channels share one.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("latentkv.bench.channel", i);
    stubs_.push_back(pb::Generation::NewStub(grpc::CreateCustomChannel(
        options.address, grpc::InsecureChannelCredentials(), args)));
  }
  for (int32_t i = 0; i < std::max<int32_t>(1, options.cq_threads); ++i) {
    threads_.emplace_back([this] { Drain(); });
  }
}

StreamingClient::~StreamingClient() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    idle_.wait(lock, [&] { return in_flight_.load() == 0; });
  }
  cq_.Shutdown();
  for (std::thread& t : threads_) t.join();
}

void StreamingClient::Start(const RequestSpec& spec, RequestRecord record,
                            Done done) {
  auto* call = new Call;
  call->record = std::move(record);
  call->done = std::move(done);
  pb::GenerateRequest req;
  req.set_request_id("bench-" + std::to_string(spec.index));
  for (int32_t t : spec.prompt_token_ids) req.add_prompt_token_ids(t);
  pb::SamplingParams* s = req.mutable_sampling();
  s->set_max_tokens(static_cast<uint32_t>(spec.output_len));
  s->set_temperature(options_.temperature);
  s->set_seed(static_cast<uint64_t>(spec.index));
  s->set_ignore_eos(options_.ignore_eos);
  req.set_kv_cache_mode(options_.kv_cache_mode);
  if (options_.request_timeout_s > 0) {
    call->ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::microseconds(static_cast<int64_t>(
                               options_.request_timeout_s * 1e6)));
  }
  pb::Generation::Stub& stub = *stubs_[next_stub_.fetch_add(1) % stubs_.size()];
  in_flight_.fetch_add(1);
  call->reader = stub.PrepareAsyncGenerate(&call->ctx, req, &cq_);
  call->sent = Clock::now();
  call->reader->StartCall(call);
}

void StreamingClient::Drain() {
  void* tag = nullptr;
  bool ok = false;
  while (cq_.Next(&tag, &ok)) {
    const Clock::time_point now = Clock::now();
    auto* c = static_cast<Call*>(tag);
    switch (c->op) {
      case Call::Op::kStart:
      case Call::Op::kRead:
        if (c->op == Call::Op::kRead && ok) {
          const double t_ms =
              std::chrono::duration<double, std::milli>(now - c->sent).count();
          c->record.messages.push_back({t_ms, c->resp.token_ids_size()});
          if (options_.keep_token_ids) {
            c->record.token_ids.insert(c->record.token_ids.end(),
                                       c->resp.token_ids().begin(),
                                       c->resp.token_ids().end());
          }
          if (c->resp.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
            c->record.finish_reason =
                pb::FinishReason_Name(c->resp.finish_reason());
          }
          if (c->resp.has_usage()) {
            c->record.usage_prompt_tokens =
                static_cast<int32_t>(c->resp.usage().prompt_tokens());
            c->record.usage_completion_tokens =
                static_cast<int32_t>(c->resp.usage().completion_tokens());
          }
          c->resp.Clear();
        }
        if (ok) {
          c->op = Call::Op::kRead;
          c->reader->Read(&c->resp, c);
        } else {
          c->op = Call::Op::kFinish;
          c->reader->Finish(&c->status, c);
        }
        break;
      case Call::Op::kFinish: {
        c->record.status = StatusCodeName(c->status.error_code());
        if (!c->status.ok()) c->record.error = c->status.error_message();
        c->record.metrics = ComputeRequestMetrics(c->record.messages);
        c->done(std::move(c->record));
        delete c;
        if (in_flight_.fetch_sub(1) == 1) {
          std::lock_guard<std::mutex> lock(mu_);
          idle_.notify_all();
        }
        break;
      }
    }
  }
}

}  // namespace latentkv::bench
