// TLS material for latentkv's listeners and channels: PEM files read and
// checked once at start (the certificate parses, has not expired, matches
// its private key; the CA bundle parses), so a wrong file is a clear error
// at start-up instead of a failed handshake later, and the gRPC credentials
// built from them.
//
// Two uses:
//  - the public port (coordinator gRPC and HTTP): server certificate + key,
//    no client certificates (clients authenticate with API keys);
//  - the cluster (cluster_tls.h): mutual TLS between coordinator, workers
//    and kvstore, every member holding a certificate of the cluster CA.
// Thread-safety: pure functions; the returned objects are immutable.
#ifndef LATENTKV_COMMON_AUTH_TLS_H_
#define LATENTKV_COMMON_AUTH_TLS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace latentkv::auth {

// Paths of PEM files; "" : not given.
struct TlsFiles {
  std::string cert_file;  // certificate chain, leaf first
  std::string key_file;   // the leaf's private key
  std::string ca_file;    // trusted CA certificates (one or more)
};

// PEM text read from TlsFiles.
struct TlsPem {
  std::string cert_chain;
  std::string private_key;
  std::string ca;
};

// Reads and checks `files`. cert_file and key_file come together or not at
// all; `need_cert` / `need_ca` make them required. InvalidArgument naming
// the file: unreadable, not PEM, an expired or not yet valid leaf, a key
// that does not match the leaf.
absl::StatusOr<TlsPem> LoadTlsFiles(const TlsFiles& files, bool need_cert,
                                    bool need_ca);

// Server credentials presenting pem's certificate. With
// `require_client_cert`, clients must present a certificate that chains to
// pem.ca (mutual TLS); otherwise no client certificate is asked for.
std::shared_ptr<grpc::ServerCredentials> TlsServerCredentials(
    const TlsPem& pem, bool require_client_cert);

// Channel credentials trusting pem.ca (empty: the system roots) and, when
// pem has a certificate, presenting it.
std::shared_ptr<grpc::ChannelCredentials> TlsChannelCredentials(
    const TlsPem& pem);

// A client of a public port: TLS or plaintext.
struct ClientTls {
  bool enabled = false;
  std::string ca_file;      // CA of the server's certificate ("" : system)
  std::string server_name;  // name expected in the certificate ("" : host)
};
// A channel to `address` as `tls` says. InvalidArgument for a CA file
// LoadTlsFiles refuses.
absl::StatusOr<std::shared_ptr<grpc::Channel>> NewClientChannel(
    const std::string& address, const ClientTls& tls,
    grpc::ChannelArguments args = grpc::ChannelArguments());

// The DNS names in the subjectAltName of the first certificate of `pem`
// (empty when it has none or does not parse).
std::vector<std::string> CertDnsNames(const std::string& pem);

// Reads a whole (small) file; InvalidArgument naming it when unreadable or
// over 1 MiB.
absl::StatusOr<std::string> ReadPemFile(const std::string& path);

}  // namespace latentkv::auth

#endif  // LATENTKV_COMMON_AUTH_TLS_H_
