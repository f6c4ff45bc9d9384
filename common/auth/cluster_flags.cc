// The cluster servers' shared flags (cluster_flags.h).
#include "common/auth/cluster_flags.h"

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "common/auth/cluster_secret.h"
#include "common/auth/cluster_tls.h"

ABSL_FLAG(int, exit_with_parent_pid, 0,
          "Exit (SIGTERM, a normal drain) when this process, the parent that "
          "started it, exits: set by latentkv serve. 0: off");
ABSL_FLAG(std::string, cluster_secret_file, "",
          "The cluster credential (first line, >= 32 characters) that the "
          "internal services require and internal calls present; serve "
          "writes a fresh one. Empty: internal services open (a trusted "
          "host only)");
ABSL_FLAG(std::string, cluster_ca_file, "",
          "Cluster mutual TLS: the cluster CA (PEM) that internal peers' "
          "certificates must chain to. With --cluster_cert_file and "
          "--cluster_key_file (all three or none; serve makes a throwaway "
          "CA). Empty: internal traffic is plaintext");
ABSL_FLAG(std::string, cluster_cert_file, "",
          "Cluster mutual TLS: this process's certificate (PEM), presented "
          "as server and as client");
ABSL_FLAG(std::string, cluster_key_file, "",
          "Cluster mutual TLS: the private key of --cluster_cert_file");
ABSL_FLAG(std::string, cluster_tls_name, "latentkv-cluster",
          "The name internal clients require in a peer's certificate "
          "(subjectAltName); empty: the host name dialed");

namespace latentkv::auth {

int SetUpClusterProcessFromFlags() {
  if (const int code =
          SetUpClusterProcess(absl::GetFlag(FLAGS_exit_with_parent_pid),
                              absl::GetFlag(FLAGS_cluster_secret_file));
      code != 0) {
    return code;
  }
  const TlsFiles files{absl::GetFlag(FLAGS_cluster_cert_file),
                       absl::GetFlag(FLAGS_cluster_key_file),
                       absl::GetFlag(FLAGS_cluster_ca_file)};
  if (absl::Status st =
          LoadClusterTls(files, absl::GetFlag(FLAGS_cluster_tls_name));
      !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 2;
  }
  return 0;
}

}  // namespace latentkv::auth
