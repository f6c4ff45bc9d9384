// The latencies of one Generate call as the coordinator's client sees them,
// from the times its response messages were sent. Plain C++ (no gRPC, no
// Prometheus), so the arithmetic is unit-tested on its own.
//
// Definitions (all in seconds, from the call's arrival):
//  - TTFT: arrival -> the first message carrying a token;
//  - E2E: arrival -> the end of the call;
//  - TPOT: (E2E - TTFT) / (tokens - 1), for calls with >= 2 tokens (as
//    coordinator/latency_stats.h);
//  - ITL: one sample per token after the first. A message with k tokens
//    that arrives g after the previous token-bearing message gives each of
//    its k tokens g / k; the first message's other k - 1 tokens arrived with
//    the first token and give 0. So a call with n tokens gives n - 1 samples
//    and they sum to (last token message - first token message).
// Thread-safety: none (one call's interceptor owns it).
#ifndef LATENTKV_COORDINATOR_METRICS_REQUEST_TIMELINE_H_
#define LATENTKV_COORDINATOR_METRICS_REQUEST_TIMELINE_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

namespace latentkv::coordinator {

class RequestTimeline {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RequestTimeline(Clock::time_point arrival) : arrival_(arrival) {}

  // A response message with `tokens` new tokens sent at `t` (>= the
  // previous message's time). Messages without tokens change nothing.
  void OnMessage(Clock::time_point t, int tokens);

  int64_t tokens() const { return tokens_; }
  // Unset until a token was sent.
  std::optional<double> ttft_s() const;
  // E2E if the call ended at `end`.
  double e2e_s(Clock::time_point end) const;
  // Unset for calls with fewer than 2 tokens.
  std::optional<double> tpot_s(Clock::time_point end) const;
  // The ITL samples so far (tokens() - 1 of them once a token was sent).
  const std::vector<double>& itl_s() const { return itl_; }

 private:
  Clock::time_point arrival_;
  std::optional<Clock::time_point> first_, last_;  // token-bearing messages
  int64_t tokens_ = 0;
  std::vector<double> itl_;
};

}  // namespace latentkv::coordinator

#endif  // LATENTKV_COORDINATOR_METRICS_REQUEST_TIMELINE_H_
