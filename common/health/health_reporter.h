// The grpc.health.v1 services every latentkv process reports on its gRPC
// port (Kubernetes gRPC probes name them; the names are fixed):
//   "liveness"   SERVING while the process is up; NOT_SERVING once draining
//   "readiness"  SERVING while the process can take work (coordinator: a
//                worker is registered; worker: model loaded, TP group formed
//                and registered with the coordinator; kvstore: listening);
//                NOT_SERVING once draining
//   ""           the same as "readiness"
// Uses grpc++'s default health service (grpc::EnableDefaultHealthCheckService
// before building the server). Note SetServingStatus(bool) on that service
// sets every name at once; this class sets names one by one.
// Thread-safety: all methods are thread-safe.
#ifndef LATENTKV_COMMON_HEALTH_HEALTH_REPORTER_H_
#define LATENTKV_COMMON_HEALTH_HEALTH_REPORTER_H_

#include <mutex>

#include "grpcpp/health_check_service_interface.h"

namespace latentkv {

inline constexpr char kLivenessService[] = "liveness";
inline constexpr char kReadinessService[] = "readiness";

class HealthReporter {
 public:
  // Sets liveness SERVING and readiness (and "") to `ready`. `health` (the
  // server's GetHealthCheckService()) must outlive this object.
  HealthReporter(grpc::HealthCheckServiceInterface* health, bool ready);

  // Readiness (and ""); ignored once draining.
  void SetReady(bool ready);
  // Liveness and readiness NOT_SERVING for good.
  void Drain();

 private:
  grpc::HealthCheckServiceInterface* health_;
  std::mutex mu_;
  bool draining_ = false;  // guarded by mu_
};

}  // namespace latentkv

#endif  // LATENTKV_COMMON_HEALTH_HEALTH_REPORTER_H_
