// A throwaway certificate authority: what `latentkv serve` makes for each
// local cluster (and tests make for theirs) so that coordinator, workers and
// kvstore talk mutual TLS without an operator-run PKI. Keys are EC P-256,
// signatures ECDSA-SHA256, serials 128 random bits, validity starts an hour
// back (clock skew).
//
// A CA certificate is "CA:TRUE, pathlen:0" with keyCertSign/cRLSign; an
// issued certificate is "CA:FALSE" with digitalSignature and extended key
// usages serverAuth and clientAuth (one certificate serves a member as
// server and as client), and its subjectAltName lists `dns_names` and `ips`.
// Thread-safety: pure functions (OpenSSL 3 is thread-safe).
#ifndef LATENTKV_COMMON_AUTH_CERT_AUTHORITY_H_
#define LATENTKV_COMMON_AUTH_CERT_AUTHORITY_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace latentkv::auth {

// A certificate and its private key, PEM text.
struct PemPair {
  std::string cert;
  std::string key;
};

// A self-signed CA valid for `validity` (> 0).
absl::StatusOr<PemPair> NewCertAuthority(const std::string& common_name,
                                         absl::Duration validity);

// A certificate signed by `ca` for the names given (at least one name; IPs
// as dotted IPv4 or IPv6 text). InvalidArgument for a CA that does not parse
// or an address that is not an IP.
absl::StatusOr<PemPair> IssueCert(const PemPair& ca,
                                  const std::string& common_name,
                                  const std::vector<std::string>& dns_names,
                                  const std::vector<std::string>& ips,
                                  absl::Duration validity);

// Writes `text` to a new file `path` with mode 0600 (the file must not
// exist).
absl::Status WritePrivateFile(const std::string& path, const std::string& text);

}  // namespace latentkv::auth

#endif  // LATENTKV_COMMON_AUTH_CERT_AUTHORITY_H_
