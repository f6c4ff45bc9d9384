// TLS material (tls.h), checked with OpenSSL's libcrypto.
#include "common/auth/tls.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"

namespace latentkv::auth {
namespace {

constexpr int64_t kMaxPemBytes = int64_t{1} << 20;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

BioPtr MemBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The first certificate of `pem`, or null.
X509Ptr FirstCert(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

// How many certificates `pem` holds (0 when the first does not parse).
int CountCerts(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  int n = 0;
  while (X509Ptr c{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    ++n;
  }
  return n;
}

}  // namespace

absl::StatusOr<std::string> ReadPemFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  std::string text;
  char buf[4096];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (static_cast<int64_t>(text.size()) > kMaxPemBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is over 1 MiB: not a PEM file"));
    }
  }
  return text;
}

absl::StatusOr<TlsPem> LoadTlsFiles(const TlsFiles& files, bool need_cert,
                                    bool need_ca) {
  TlsPem pem;
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError(
        "a TLS certificate and its private key come together: give both "
        "files or neither");
  }
  if (need_cert && files.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "a TLS certificate and private key are required");
  }
  if (need_ca && files.ca_file.empty()) {
    return absl::InvalidArgumentError("a TLS CA certificate is required");
  }
  if (!files.cert_file.empty()) {
    auto cert = ReadPemFile(files.cert_file);
    if (!cert.ok()) return cert.status();
    auto key = ReadPemFile(files.key_file);
    if (!key.ok()) return key.status();
    X509Ptr leaf = FirstCert(*cert);
    if (!leaf) {
      return absl::InvalidArgumentError(
          absl::StrCat(files.cert_file, ": no PEM certificate"));
    }
    BioPtr kbio = MemBio(*key);
    PkeyPtr pkey(
        PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
    if (!pkey) {
      return absl::InvalidArgumentError(absl::StrCat(
          files.key_file, ": no PEM private key (or it is encrypted)"));
    }
    if (X509_check_private_key(leaf.get(), pkey.get()) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          files.key_file, " is not the private key of ", files.cert_file));
    }
    if (X509_cmp_current_time(X509_get0_notAfter(leaf.get())) <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(files.cert_file, ": the certificate has expired"));
    }
    if (X509_cmp_current_time(X509_get0_notBefore(leaf.get())) >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(files.cert_file, ": the certificate is not valid yet"));
    }
    pem.cert_chain = std::move(*cert);
    pem.private_key = std::move(*key);
  }
  if (!files.ca_file.empty()) {
    auto ca = ReadPemFile(files.ca_file);
    if (!ca.ok()) return ca.status();
    if (CountCerts(*ca) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(files.ca_file, ": no PEM CA certificate"));
    }
    pem.ca = std::move(*ca);
  }
  return pem;
}

std::shared_ptr<grpc::ServerCredentials> TlsServerCredentials(
    const TlsPem& pem, bool require_client_cert) {
  grpc::SslServerCredentialsOptions o(
      require_client_cert
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (require_client_cert) o.pem_root_certs = pem.ca;
  o.pem_key_cert_pairs.push_back({pem.private_key, pem.cert_chain});
  return grpc::SslServerCredentials(o);
}

std::shared_ptr<grpc::ChannelCredentials> TlsChannelCredentials(
    const TlsPem& pem) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = pem.ca;
  o.pem_private_key = pem.private_key;
  o.pem_cert_chain = pem.cert_chain;
  return grpc::SslCredentials(o);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> NewClientChannel(
    const std::string& address, const ClientTls& tls,
    grpc::ChannelArguments args) {
  if (!tls.enabled) {
    return grpc::CreateCustomChannel(address,
                                     grpc::InsecureChannelCredentials(), args);
  }
  auto pem = LoadTlsFiles({"", "", tls.ca_file}, /*need_cert=*/false,
                          /*need_ca=*/false);
  if (!pem.ok()) return pem.status();
  if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
  return grpc::CreateCustomChannel(address, TlsChannelCredentials(*pem), args);
}

std::vector<std::string> CertDnsNames(const std::string& pem) {
  std::vector<std::string> out;
  X509Ptr cert = FirstCert(pem);
  if (!cert) return out;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_DNS) continue;
    const ASN1_IA5STRING* s = n->d.dNSName;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
  }
  GENERAL_NAMES_free(names);
  return out;
}

}  // namespace latentkv::auth
