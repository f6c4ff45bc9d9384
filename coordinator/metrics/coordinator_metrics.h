// Prometheus metrics of latentkv-coordinator, measured at the coordinator
// (so gRPC and HTTP clients are counted alike: the HTTP server calls the same
// Generation service in-process).
//
// Per call, from a gRPC server interceptor on latentkv.v1.Generation/Generate
// (timeline definitions in request_timeline.h):
//   latentkv_coordinator_requests_total{outcome}   counter; outcome = ok,
//       cancelled, or the gRPC status code in lower case (invalid_argument,
//       resource_exhausted, unavailable, deadline_exceeded, internal, ...)
//   latentkv_coordinator_ttft_seconds              histogram  \  over calls
//   latentkv_coordinator_tpot_seconds              histogram   | that ended
//   latentkv_coordinator_itl_seconds               histogram   | OK
//   latentkv_coordinator_e2e_seconds               histogram  /
//   latentkv_coordinator_generated_tokens_total{model}  counter (tokens sent)
//   latentkv_coordinator_prompt_tokens_total{model}     counter
// From the HTTP server (RecordHttp, every response):
//   latentkv_http_responses_total{route,status,reason}  counter; reason is
//       the OpenAI error code or type of an error ("" for success)
// Read on every scrape:
//   latentkv_coordinator_queue_depth               gauge: calls admitted and
//       not finished (Coordinator::inflight(); a deploy HPA scales on it)
//   latentkv_coordinator_worker_inflight{worker,role}  gauge: calls routed to
//       each registered worker and not finished
//   latentkv_coordinator_workers{role}             gauge: registered workers
// Thread-safety: all methods are thread-safe.
#ifndef LATENTKV_COORDINATOR_METRICS_COORDINATOR_METRICS_H_
#define LATENTKV_COORDINATOR_METRICS_COORDINATOR_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "coordinator/coordinator_service.h"
#include "coordinator/metrics/request_timeline.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace latentkv::coordinator {

class CoordinatorMetrics {
 public:
  // Registers the per-call metrics in `registry`. Both must outlive this
  // object, and this object every server using its interceptor factory.
  CoordinatorMetrics(Coordinator* coordinator, prometheus::Registry* registry);

  // For ServerBuilder::experimental().SetInterceptorCreators().
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  NewInterceptorFactory();
  // The scrape-time gauges (queue depth, workers), for MetricsServer::Add.
  std::shared_ptr<prometheus::Collectable> NewCollectable();

  // One finished Generate call ending at `end` with `code`.
  void RecordCall(const RequestTimeline& timeline, grpc::StatusCode code,
                  RequestTimeline::Clock::time_point end,
                  int64_t prompt_tokens = 0);
  // One HTTP response (HttpServerOptions::on_response).
  void RecordHttp(const std::string& route, int status,
                  const std::string& reason);

 private:
  Coordinator* coordinator_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Counter* tokens_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Family<prometheus::Counter>* http_;
  prometheus::Histogram *ttft_, *tpot_, *itl_, *e2e_;
};

// "ok", "cancelled", "invalid_argument", ...: the lower-case name of `code`.
const char* OutcomeName(grpc::StatusCode code);

}  // namespace latentkv::coordinator

#endif  // LATENTKV_COORDINATOR_METRICS_COORDINATOR_METRICS_H_
