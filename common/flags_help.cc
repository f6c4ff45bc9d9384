#include "common/flags_help.h"

#include "absl/flags/usage_config.h"
#include "absl/strings/string_view.h"

namespace latentkv {
namespace {

// Flags of our own sources: every path not inside a third-party tree.
bool OwnFlagFile(absl::string_view path) {
  return path.find("absl/") == absl::string_view::npos &&
         path.find("/usr/") == absl::string_view::npos &&
         path.find("grpc") == absl::string_view::npos;
}

}  // namespace

void ConfigureFlagsHelp() {
  absl::FlagsUsageConfig config;
  config.contains_helpshort_flags = OwnFlagFile;
  config.contains_help_flags = OwnFlagFile;
  absl::SetFlagsUsageConfig(config);
}

}  // namespace latentkv
