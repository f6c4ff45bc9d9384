// Command-line flags of the KV residency policy (--kv_policy, --kv_budget,
// ...), shared by latentkv-worker and the latentkv CLI. Only main() reads
// them; libraries take ResidencyOptions.
#ifndef LATENTKV_WORKER_RESIDENCY_FLAGS_H_
#define LATENTKV_WORKER_RESIDENCY_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/residency/policy.h"

namespace latentkv::worker {

// The options the --kv_* flags describe; InvalidArgument for a bad
// --kv_capacity list.
absl::StatusOr<ResidencyOptions> ResidencyOptionsFromFlags();
// The same flags as "--name=value" arguments, to forward to a worker.
std::vector<std::string> ResidencyFlagArgs();

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_RESIDENCY_FLAGS_H_
