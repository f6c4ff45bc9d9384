#include "worker/comm/nccl_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace latentkv::comm {

std::string NcclResultName(int result) {
  switch (result) {
    case kNcclSuccess:
      return "ncclSuccess";
    case kNcclUnhandledCudaError:
      return "ncclUnhandledCudaError";
    case kNcclSystemError:
      return "ncclSystemError";
    case kNcclInternalError:
      return "ncclInternalError";
    case kNcclInvalidArgument:
      return "ncclInvalidArgument";
    case kNcclInvalidUsage:
      return "ncclInvalidUsage";
    case kNcclRemoteError:
      return "ncclRemoteError";
    case kNcclInProgress:
      return "ncclInProgress";
  }
  return absl::StrCat("ncclResult ", result);
}

absl::Status NcclResultToStatus(int result, absl::string_view what,
                                absl::string_view detail) {
  if (result == kNcclSuccess) return absl::OkStatus();
  std::string message = absl::StrCat(what, ": ", NcclResultName(result));
  if (!detail.empty()) absl::StrAppend(&message, ": ", detail);
  if (result == kNcclSystemError || result == kNcclRemoteError) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

}  // namespace latentkv::comm
