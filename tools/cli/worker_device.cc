// Which GPU each worker process of `latentkv serve` computes on
// (commands.h WorkerDevice).
#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "tools/cli/commands.h"

namespace latentkv::cli {

int32_t NumGroups(const ServeOptions& o) {
  return o.workers + o.prefill_workers + o.decode_workers;
}

int32_t GroupTp(const ServeOptions& o, int32_t group) {
  if (group >= o.workers && group < o.workers + o.prefill_workers) {
    return o.prefill_tp > 0 ? o.prefill_tp : o.tp;
  }
  if (group >= o.workers + o.prefill_workers) {
    return o.decode_tp > 0 ? o.decode_tp : o.tp;
  }
  return o.tp;
}

int32_t GroupFirstProcess(const ServeOptions& o, int32_t group) {
  int32_t first = 0;
  for (int32_t g = 0; g < group; ++g) first += GroupTp(o, g);
  return first;
}

absl::StatusOr<std::string> WorkerDevice(const ServeOptions& o, int index) {
  absl::StatusOr<kernels::DeviceName> d = kernels::ParseDeviceName(o.device);
  if (!d.ok()) return d.status();
  if (d->backend != "cuda") return o.device;
  if (o.gpus < 1) return absl::InvalidArgumentError("--gpus must be >= 1");
  for (int32_t g = 0; g < std::max(NumGroups(o), 1); ++g) {
    const int32_t tp = GroupTp(o, g);
    if (tp > o.gpus) {
      return absl::InvalidArgumentError(
          absl::StrCat("a group of ", tp, " ranks with --device=", o.device,
                       " needs --gpus >= ", tp,
                       ": NCCL puts each rank of a group on its own GPU"));
    }
  }
  return absl::StrCat("cuda:", (d->ordinal + index) % o.gpus);
}

}  // namespace latentkv::cli
