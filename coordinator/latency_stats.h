// The latencies the coordinator measures itself for each completed request
// (time to first token, time per output token, end to end), over a sliding
// window of the most recent requests, with nearest-rank percentiles.
// TPOT = (e2e - ttft) / (tokens - 1), recorded for requests with >= 2 tokens.
// Plain C++ (no gRPC). Thread-safety: all methods are thread-safe.
#ifndef LATENTKV_COORDINATOR_LATENCY_STATS_H_
#define LATENTKV_COORDINATOR_LATENCY_STATS_H_

#include <cstdint>
#include <deque>
#include <mutex>

namespace latentkv::coordinator {

struct LatencySummary {
  int64_t count = 0;  // samples in the window
  double mean_ms = 0, p50_ms = 0, p90_ms = 0, p99_ms = 0;
};

class LatencyTracker {
 public:
  // Keeps the last `window` samples of each metric; window > 0.
  explicit LatencyTracker(size_t window = 4096) : window_(window) {}
  // ttft_ms: arrival to the first token sent; e2e_ms: to the last message;
  // tokens: completion tokens (requests with none record nothing).
  void Record(double ttft_ms, double e2e_ms, int64_t tokens);
  LatencySummary Ttft() const;
  LatencySummary Tpot() const;
  LatencySummary E2e() const;
  // Requests recorded since start (not only in the window).
  int64_t completed() const;

 private:
  static LatencySummary Summarise(const std::deque<double>& samples);
  void Push(std::deque<double>& d, double v);

  const size_t window_;
  mutable std::mutex mu_;
  std::deque<double> ttft_, tpot_, e2e_;  // guarded by mu_
  int64_t completed_ = 0;                 // guarded by mu_
};

}  // namespace latentkv::coordinator

#endif  // LATENTKV_COORDINATOR_LATENCY_STATS_H_
