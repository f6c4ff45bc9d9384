#include "coordinator/metrics/request_timeline.h"

namespace latentkv::coordinator {
namespace {

double Seconds(RequestTimeline::Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

void RequestTimeline::OnMessage(Clock::time_point t, int tokens) {
  if (tokens <= 0) return;
  if (!first_) {
    first_ = t;
    itl_.insert(itl_.end(), tokens - 1, 0.0);
  } else {
    const double each = Seconds(t - *last_) / tokens;
    itl_.insert(itl_.end(), tokens, each);
  }
  last_ = t;
  tokens_ += tokens;
}

std::optional<double> RequestTimeline::ttft_s() const {
  if (!first_) return std::nullopt;
  return Seconds(*first_ - arrival_);
}

double RequestTimeline::e2e_s(Clock::time_point end) const {
  return Seconds(end - arrival_);
}

std::optional<double> RequestTimeline::tpot_s(Clock::time_point end) const {
  if (tokens_ < 2) return std::nullopt;
  return (e2e_s(end) - *ttft_s()) / static_cast<double>(tokens_ - 1);
}

}  // namespace latentkv::coordinator
