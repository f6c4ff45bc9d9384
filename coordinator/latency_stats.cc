#include "coordinator/latency_stats.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace latentkv::coordinator {

void LatencyTracker::Push(std::deque<double>& d, double v) {
  d.push_back(v);
  if (d.size() > window_) d.pop_front();
}

void LatencyTracker::Record(double ttft_ms, double e2e_ms, int64_t tokens) {
  if (tokens <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  ++completed_;
  Push(ttft_, ttft_ms);
  Push(e2e_, e2e_ms);
  if (tokens >= 2) {
    Push(tpot_, (e2e_ms - ttft_ms) / static_cast<double>(tokens - 1));
  }
}

LatencySummary LatencyTracker::Summarise(const std::deque<double>& samples) {
  LatencySummary s;
  s.count = static_cast<int64_t>(samples.size());
  if (samples.empty()) return s;
  std::vector<double> v(samples.begin(), samples.end());
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean_ms = sum / static_cast<double>(v.size());
  // Nearest rank: the smallest value with at least p of the samples <= it.
  auto rank = [&](double p) {
    const size_t r = static_cast<size_t>(std::ceil(p * v.size()));
    return v[std::max<size_t>(r, 1) - 1];
  };
  s.p50_ms = rank(0.50);
  s.p90_ms = rank(0.90);
  s.p99_ms = rank(0.99);
  return s;
}

LatencySummary LatencyTracker::Ttft() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Summarise(ttft_);
}

LatencySummary LatencyTracker::Tpot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Summarise(tpot_);
}

LatencySummary LatencyTracker::E2e() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Summarise(e2e_);
}

int64_t LatencyTracker::completed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return completed_;
}

}  // namespace latentkv::coordinator
