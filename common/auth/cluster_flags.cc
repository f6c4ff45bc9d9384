// The cluster servers' shared flags (cluster_flags.h).
#include "common/auth/cluster_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "common/auth/cluster_secret.h"

ABSL_FLAG(int, exit_with_parent_pid, 0,
          "Exit (SIGTERM, a normal drain) when this process, the parent that "
          "started it, exits: set by latentkv serve. 0: off");
ABSL_FLAG(std::string, cluster_secret_file, "",
          "The cluster credential (first line, >= 32 characters) that the "
          "internal services require and internal calls present; serve "
          "writes a fresh one. Empty: internal services open (a trusted "
          "host only)");

namespace latentkv::auth {

int SetUpClusterProcessFromFlags() {
  return SetUpClusterProcess(absl::GetFlag(FLAGS_exit_with_parent_pid),
                             absl::GetFlag(FLAGS_cluster_secret_file));
}

}  // namespace latentkv::auth
