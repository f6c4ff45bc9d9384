// Which GPU each worker process of `latentkv serve` computes on
// (commands.h WorkerDevice).
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "tools/cli/commands.h"

namespace latentkv::cli {

absl::StatusOr<std::string> WorkerDevice(const ServeOptions& o, int index) {
  absl::StatusOr<kernels::DeviceName> d = kernels::ParseDeviceName(o.device);
  if (!d.ok()) return d.status();
  if (d->backend != "cuda") return o.device;
  if (o.gpus < 1) return absl::InvalidArgumentError("--gpus must be >= 1");
  if (o.tp > o.gpus) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tp=", o.tp, " with --device=", o.device, " needs --gpus >= ", o.tp,
        ": NCCL puts each rank of a group on its own GPU"));
  }
  return absl::StrCat("cuda:", (d->ordinal + index) % o.gpus);
}

}  // namespace latentkv::cli
