#include "coordinator/metrics/coordinator_metrics.h"

#include <cstring>
#include <map>
#include <string>

#include "common/metrics/metrics_server.h"
#include "latentkv/v1/generation.pb.h"

namespace latentkv::coordinator {
namespace {

using Hook = grpc::experimental::InterceptionHookPoints;
constexpr char kGenerateMethod[] = "/latentkv.v1.Generation/Generate";

// Follows one Generate call: message times on the way out, the status at the
// end. A call that ends without sending a status (the client vanished before
// the server could answer) counts as cancelled.
class GenerateInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit GenerateInterceptor(CoordinatorMetrics* metrics)
      : metrics_(metrics), timeline_(RequestTimeline::Clock::now()) {}
  ~GenerateInterceptor() override {
    if (!recorded_) {
      metrics_->RecordCall(timeline_, grpc::StatusCode::CANCELLED,
                           RequestTimeline::Clock::now());
    }
  }

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(Hook::PRE_SEND_MESSAGE)) {
      const auto* msg = static_cast<const latentkv::v1::GenerateResponse*>(
          methods->GetSendMessage());
      if (msg != nullptr) {
        timeline_.OnMessage(RequestTimeline::Clock::now(),
                            msg->token_ids_size());
        if (msg->has_usage()) prompt_tokens_ = msg->usage().prompt_tokens();
      }
    }
    if (methods->QueryInterceptionHookPoint(Hook::PRE_SEND_STATUS) &&
        !recorded_) {
      recorded_ = true;
      metrics_->RecordCall(timeline_, methods->GetSendStatus().error_code(),
                           RequestTimeline::Clock::now(), prompt_tokens_);
    }
    methods->Proceed();
  }

 private:
  CoordinatorMetrics* metrics_;
  RequestTimeline timeline_;
  int64_t prompt_tokens_ = 0;  // from the usage of the final message
  bool recorded_ = false;
};

class Factory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(CoordinatorMetrics* m) : m_(m) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (std::strcmp(info->method(), kGenerateMethod) != 0) return nullptr;
    return new GenerateInterceptor(m_);
  }

 private:
  CoordinatorMetrics* m_;
};

prometheus::Histogram* AddHistogram(prometheus::Registry* r, const char* name,
                                    const char* help) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(*r).Add(
      {}, metrics::LatencyBuckets());
}

}  // namespace

const char* OutcomeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "ok";
    case grpc::StatusCode::CANCELLED:
      return "cancelled";
    case grpc::StatusCode::UNKNOWN:
      return "unknown";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "invalid_argument";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "deadline_exceeded";
    case grpc::StatusCode::NOT_FOUND:
      return "not_found";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "already_exists";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "permission_denied";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "resource_exhausted";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "failed_precondition";
    case grpc::StatusCode::ABORTED:
      return "aborted";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "out_of_range";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "unimplemented";
    case grpc::StatusCode::INTERNAL:
      return "internal";
    case grpc::StatusCode::UNAVAILABLE:
      return "unavailable";
    case grpc::StatusCode::DATA_LOSS:
      return "data_loss";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "unauthenticated";
    default:
      return "unknown";
  }
}

CoordinatorMetrics::CoordinatorMetrics(Coordinator* coordinator,
                                       prometheus::Registry* registry)
    : coordinator_(coordinator) {
  requests_ = &prometheus::BuildCounter()
                   .Name("latentkv_coordinator_requests_total")
                   .Help(
                       "Generate calls finished, by outcome (ok, cancelled "
                       "or the gRPC status code)")
                   .Register(*registry);
  requests_->Add({{"outcome", "ok"}});  // present from the start
  requests_->Add({{"outcome", "cancelled"}});
  const std::string& model = coordinator->model_id();
  tokens_ = &prometheus::BuildCounter()
                 .Name("latentkv_coordinator_generated_tokens_total")
                 .Help("Tokens sent to clients")
                 .Register(*registry)
                 .Add({{"model", model}});
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("latentkv_coordinator_prompt_tokens_total")
                        .Help("Prompt tokens of calls that finished")
                        .Register(*registry)
                        .Add({{"model", model}});
  http_ = &prometheus::BuildCounter()
               .Name("latentkv_http_responses_total")
               .Help(
                   "HTTP API responses by route, status and, for errors, "
                   "the OpenAI error code or type (every rejection, "
                   "whichever layer made it)")
               .Register(*registry);
  ttft_ = AddHistogram(registry, "latentkv_coordinator_ttft_seconds",
                       "Arrival to the first token sent (calls ending OK)");
  tpot_ = AddHistogram(
      registry, "latentkv_coordinator_tpot_seconds",
      "(E2E - TTFT) / (tokens - 1) per call ending OK with >= 2 tokens");
  itl_ = AddHistogram(registry, "latentkv_coordinator_itl_seconds",
                      "Gap before each token after the first (calls ending "
                      "OK; tokens sent together share their message's gap)");
  e2e_ = AddHistogram(registry, "latentkv_coordinator_e2e_seconds",
                      "Arrival to the end of the call (calls ending OK)");
}

void CoordinatorMetrics::RecordCall(const RequestTimeline& tl,
                                    grpc::StatusCode code,
                                    RequestTimeline::Clock::time_point end,
                                    int64_t prompt_tokens) {
  requests_->Add({{"outcome", OutcomeName(code)}}).Increment();
  tokens_->Increment(static_cast<double>(tl.tokens()));
  prompt_tokens_->Increment(static_cast<double>(prompt_tokens));
  if (code != grpc::StatusCode::OK) return;
  e2e_->Observe(tl.e2e_s(end));
  if (auto t = tl.ttft_s()) ttft_->Observe(*t);
  if (auto t = tl.tpot_s(end)) tpot_->Observe(*t);
  for (double s : tl.itl_s()) itl_->Observe(s);
}

void CoordinatorMetrics::RecordHttp(const std::string& route, int status,
                                    const std::string& reason) {
  http_
      ->Add({{"route", route},
             {"status", std::to_string(status)},
             {"reason", reason}})
      .Increment();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
CoordinatorMetrics::NewInterceptorFactory() {
  return std::make_unique<Factory>(this);
}

std::shared_ptr<prometheus::Collectable> CoordinatorMetrics::NewCollectable() {
  Coordinator* c = coordinator_;
  return std::make_shared<metrics::FunctionCollectable>([c] {
    auto depth = metrics::GaugeFamily(
        "latentkv_coordinator_queue_depth",
        "Generate calls admitted and not finished (queued or running)");
    metrics::AddSample(depth, c->inflight());
    auto inflight = metrics::GaugeFamily(
        "latentkv_coordinator_worker_inflight",
        "Calls routed to a worker and not finished, per registered worker");
    auto workers = metrics::GaugeFamily("latentkv_coordinator_workers",
                                        "Registered workers by role");
    std::map<std::string, int> by_role = {
        {"mixed", 0}, {"prefill", 0}, {"decode", 0}};
    auto cached = metrics::GaugeFamily(
        "latentkv_coordinator_worker_cached_blocks",
        "Prefix-cache blocks the router's index holds per worker");
    for (const WorkerInfo& w : c->registry().List()) {
      metrics::AddSample(inflight, static_cast<double>(w.inflight),
                         {{"worker", w.id}, {"role", w.role}});
      metrics::AddSample(cached,
                         static_cast<double>(c->kv_index().blocks(w.id)),
                         {{"worker", w.id}, {"role", w.role}});
      ++by_role[w.role];
    }
    for (const auto& [role, n] : by_role) {
      metrics::AddSample(workers, n, {{"role", role}});
    }
    auto hits = metrics::CounterFamily(
        "latentkv_coordinator_routed_prefix_hits_total",
        "Requests routed to a worker that cached part of their prompt");
    metrics::AddSample(hits, static_cast<double>(c->routed_prefix_hits()));
    auto hit_tokens = metrics::CounterFamily(
        "latentkv_coordinator_routed_prefix_tokens_total",
        "Prompt tokens the chosen workers had cached");
    metrics::AddSample(hit_tokens,
                       static_cast<double>(c->routed_prefix_tokens()));
    return std::vector<prometheus::MetricFamily>{depth,  inflight, workers,
                                                 cached, hits,     hit_tokens};
  });
}

}  // namespace latentkv::coordinator
