// One phase of the serving benchmark: requests from a Workload sent at their
// arrival times through a StreamingClient, never more than `concurrency` in
// flight (a request whose arrival time has come waits for a free slot, as
// with vLLM's --max-concurrency), until `num_requests` were sent or
// `duration_s` passed; then it waits for the ones in flight to end.
#ifndef LATENTKV_TOOLS_BENCH_PHASE_H_
#define LATENTKV_TOOLS_BENCH_PHASE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/bench/client.h"
#include "tools/bench/stats.h"
#include "tools/bench/workload.h"

namespace latentkv::bench {

struct PhaseOptions {
  int32_t concurrency = 64;    // streams in flight at most, >= 1
  int64_t num_requests = 100;  // requests to send; 0: until duration_s
  double duration_s = 0;       // stop sending after this; 0: no limit
  bool progress = true;        // live progress line on stderr
  std::string label;           // shown on the progress line
};

struct PhaseResult {
  std::vector<RequestRecord> records;  // by index
  double duration_s = 0;               // phase start to the last request's end
};

// InvalidArgument when neither num_requests nor duration_s bounds it.
absl::StatusOr<PhaseResult> RunPhase(StreamingClient& client,
                                     Workload& workload,
                                     const PhaseOptions& options);

}  // namespace latentkv::bench

#endif  // LATENTKV_TOOLS_BENCH_PHASE_H_
