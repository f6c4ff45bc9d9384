// `latentkv bench serve`: a load test of a running latentkv cluster (in the
// spirit of `vllm bench serve` and GuideLLM). For each request rate, for
// each target (rate-major, so load drift hits every target alike), one phase
// (tools/bench/phase.h) of the same seeded workload; the result is the phases'
// summaries and per-request records, written as JSON and printed as a table by
// tools/bench/report.h.
#ifndef LATENTKV_TOOLS_BENCH_SERVE_BENCH_H_
#define LATENTKV_TOOLS_BENCH_SERVE_BENCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "latentkv/v1/generation.pb.h"
#include "tools/bench/stats.h"
#include "tools/bench/workload.h"

namespace latentkv::bench {

// A server to load, and the KV cache its requests ask for.
struct Target {
  std::string label;    // column name in the table
  std::string address;  // host:port of the coordinator
  latentkv::v1::KvCacheMode kv_cache_mode =
      latentkv::v1::KV_CACHE_MODE_SERVER_DEFAULT;
};

// "default" | "full" | "compressed".
absl::StatusOr<latentkv::v1::KvCacheMode> ParseKvCacheMode(
    absl::string_view name);
std::string KvCacheModeName(latentkv::v1::KvCacheMode mode);
// "label=HOST:PORT[,kv_cache_mode=full|compressed|default]".
absl::StatusOr<Target> ParseTarget(absl::string_view spec);
// "1,2,4,inf": request rates in req/s, each > 0.
absl::StatusOr<std::vector<double>> ParseRates(absl::string_view spec);

struct ServeBenchOptions {
  std::vector<Target> targets;  // >= 1; run in turn with the same workload
  // Prompts, lengths and seed; its request_rate is replaced by each of
  // `rates` in turn.
  WorkloadOptions workload;
  std::vector<double> rates = {kInf};  // one phase per rate, in order
  int32_t concurrency = 64;            // streams in flight at most
  int64_t num_requests = 100;          // per phase; 0: until duration_s
  double duration_s = 0;               // per phase; 0: no time limit
  std::string dataset;           // text file (passages per line); "": synthetic
  Slo slo;                       // goodput objectives; none by default
  float temperature = 0.0f;      // 0: greedy
  bool ignore_eos = true;        // outputs of exactly output_len tokens
  double request_timeout_s = 0;  // per-request deadline; 0: none
  int32_t channels = 1;          // HTTP/2 connections per target
  int32_t cq_threads = 1;        // client completion-queue threads
  bool keep_token_ids = false;   // token ids in the per-request records
  bool progress = true;          // live progress line on stderr
};

// One phase's outcome; RunServeBench returns them rate-major.
struct PhaseReport {
  Target target;
  double request_rate = kInf;
  PhaseSummary summary;
  std::vector<RequestRecord> records;
};

// Runs every phase. Errors: bad options, an unreachable first target
// (ListModels/Tokenize fail), targets serving different vocabularies.
// Failed requests are not errors: they are counted in the summaries.
absl::StatusOr<std::vector<PhaseReport>> RunServeBench(
    const ServeBenchOptions& options);

}  // namespace latentkv::bench

#endif  // LATENTKV_TOOLS_BENCH_SERVE_BENCH_H_
