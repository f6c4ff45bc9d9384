#include "common/health/health_reporter.h"

namespace latentkv {

HealthReporter::HealthReporter(grpc::HealthCheckServiceInterface* health,
                               bool ready)
    : health_(health) {
  health_->SetServingStatus(kLivenessService, true);
  SetReady(ready);
}

void HealthReporter::SetReady(bool ready) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return;
  health_->SetServingStatus(kReadinessService, ready);
  health_->SetServingStatus("", ready);
}

void HealthReporter::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
  health_->SetServingStatus(kLivenessService, false);
  health_->SetServingStatus(kReadinessService, false);
  health_->SetServingStatus("", false);
}

}  // namespace latentkv
