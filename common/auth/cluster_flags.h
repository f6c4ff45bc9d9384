// The flags every cluster server (latentkv-coordinator, -worker, -kvstore)
// shares, --exit_with_parent_pid, --cluster_secret_file and the cluster TLS
// files (--cluster_ca_file, --cluster_cert_file, --cluster_key_file,
// --cluster_tls_name; cluster_tls.h), defined once
// (as worker/residency/flags.h does for the residency flags).
#ifndef LATENTKV_COMMON_AUTH_CLUSTER_FLAGS_H_
#define LATENTKV_COMMON_AUTH_CLUSTER_FLAGS_H_

namespace latentkv::auth {

// SetUpClusterProcess (cluster_secret.h) with the flags' values, then
// LoadClusterTls; call right after absl::ParseCommandLine. The exit code main
// should return, or 0 to go on.
int SetUpClusterProcessFromFlags();

}  // namespace latentkv::auth

#endif  // LATENTKV_COMMON_AUTH_CLUSTER_FLAGS_H_
