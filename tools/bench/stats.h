// Statistics of the serving benchmark (`latentkv bench serve`): per-request
// latency metrics from the timeline of one streamed response, distributions
// (mean, std, median, p90, p99) and a phase's throughput and goodput.
// Plain C++: no gRPC and no clock, so every definition is unit-tested on
// hand-made timelines.
//
// Definitions (all times from the moment the client sent the request):
//   TTFT  the arrival of the first message carrying a token.
//   E2E   the arrival of the last message of the stream.
//   TPOT  (E2E - TTFT) / (n - 1) for n >= 2 output tokens; undefined (NaN,
//         left out of the distribution) for n < 2.
//   ITL   one value per output token after the first: a message carrying k
//         tokens contributes the gap since the previous token-carrying
//         message, then k - 1 zero gaps (the tokens arrived together); the
//         first token-carrying message contributes k - 1 zeros. So a request
//         has n - 1 ITL values summing to (last token message - TTFT).
#ifndef LATENTKV_TOOLS_BENCH_STATS_H_
#define LATENTKV_TOOLS_BENCH_STATS_H_

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace latentkv::bench {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// One streamed message as the client saw it.
struct MessageArrival {
  double t_ms = 0;     // since the request was sent, milliseconds
  int32_t tokens = 0;  // token ids in the message, >= 0
};

// The latency metrics of one request, milliseconds (NaN: undefined).
struct RequestMetrics {
  int32_t output_tokens = 0;   // sum of the messages' tokens
  double ttft_ms = kNaN;       // NaN when no message carried a token
  double e2e_ms = kNaN;        // NaN when there was no message
  double tpot_ms = kNaN;       // NaN when output_tokens < 2
  std::vector<double> itl_ms;  // output_tokens - 1 values (0 when none)
};

// `messages` in arrival order (t_ms non-decreasing).
RequestMetrics ComputeRequestMetrics(
    const std::vector<MessageArrival>& messages);

// Linear interpolation between closest ranks (numpy's default): for sorted
// values v[0..n-1], rank r = p/100 * (n - 1), v[floor r] + frac(r) *
// (v[ceil r] - v[floor r]). `sorted` must be non-empty and ascending;
// p in [0, 100].
double Percentile(const std::vector<double>& sorted, double p);

// Summary of a sample; NaNs are left out. An empty sample has count 0 and
// NaN everywhere else.
struct Distribution {
  int64_t count = 0;
  double mean = kNaN;
  double std = kNaN;  // population standard deviation (numpy's ddof=0)
  double median = kNaN;
  double p90 = kNaN;
  double p99 = kNaN;
  double min = kNaN;
  double max = kNaN;
};
Distribution Summarize(std::vector<double> values);

// Service-level objectives for goodput; a request meets them when each
// metric is <= its bound (inf: no bound). A request with one output token
// has no TPOT and meets any TPOT bound.
struct Slo {
  double ttft_ms = kInf;
  double tpot_ms = kInf;
  double e2e_ms = kInf;
  bool any() const { return ttft_ms < kInf || tpot_ms < kInf || e2e_ms < kInf; }
};
// Parses "ttft:MS,tpot:MS,e2e:MS" (any non-empty subset, any order).
absl::StatusOr<Slo> ParseSlo(absl::string_view spec);
bool MeetsSlo(const RequestMetrics& m, const Slo& slo);

// What the benchmark keeps of one request.
struct RequestRecord {
  int64_t index = 0;          // position in the workload
  int32_t prompt_tokens = 0;  // token ids sent
  int32_t max_tokens = 0;     // requested output length
  double scheduled_s = 0;     // planned arrival, seconds since phase start
  double sent_s = 0;          // when it was sent (later under a full window)
  std::string status = "OK";  // gRPC status code name
  std::string error;          // the status message when not OK
  std::string finish_reason;  // of the last message ("" when none)
  int32_t usage_prompt_tokens = -1;      // from the last message; -1: none
  int32_t usage_completion_tokens = -1;  // from the last message; -1: none
  std::vector<MessageArrival> messages;
  std::vector<int32_t> token_ids;  // only when the client keeps them
  RequestMetrics metrics;          // from `messages`
  bool ok() const { return status == "OK"; }
};

// A phase (one load level against one target) in numbers. Token counts and
// latency distributions are over completed (OK) requests only.
struct PhaseSummary {
  int64_t completed = 0;
  int64_t failed = 0;
  std::map<std::string, int64_t> errors;  // gRPC status code name -> count
  double duration_s = 0;  // phase start to the last request's end
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double request_throughput = 0;  // completed / duration_s, req/s
  double output_throughput = 0;   // output tokens / duration_s, tok/s
  double total_throughput = 0;    // (input + output) / duration_s, tok/s
  bool has_slo = false;
  int64_t good_requests = 0;  // completed and meeting every SLO
  double goodput = 0;         // good_requests / duration_s, req/s
  Distribution ttft_ms, tpot_ms, itl_ms, e2e_ms;
};
PhaseSummary SummarizePhase(const std::vector<RequestRecord>& records,
                            double duration_s, const Slo& slo);

}  // namespace latentkv::bench

#endif  // LATENTKV_TOOLS_BENCH_STATS_H_
