// The throwaway certificate authority (cert_authority.h), with OpenSSL 3.
#include "common/auth/cert_authority.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace latentkv::auth {
namespace {

struct Free {
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

absl::Status Fail(const std::string& what) {
  return absl::InternalError(absl::StrCat("certificate authority: ", what));
}

Ptr<EVP_PKEY> NewKey() { return Ptr<EVP_PKEY>(EVP_EC_gen("P-256")); }

std::string ToPem(X509* cert) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string ToPem(EVP_PKEY* key) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr,
                           nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// A certificate for `key` named `common_name`, valid from an hour ago for
// `validity`, with a random serial; issuer and signature are set later.
absl::StatusOr<Ptr<X509>> NewCert(EVP_PKEY* key, const std::string& common_name,
                                  absl::Duration validity) {
  Ptr<X509> cert(X509_new());
  unsigned char serial[16];
  if (!cert || RAND_bytes(serial, sizeof(serial)) != 1) {
    return Fail("no randomness for a serial");
  }
  serial[0] &= 0x7f;  // a positive INTEGER
  Ptr<BIGNUM> bn(BN_bin2bn(serial, sizeof(serial), nullptr));
  X509_set_version(cert.get(), 2);
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                  static_cast<long>(absl::ToInt64Seconds(validity)));
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("latentkv"),
                             -1, -1, 0);
  X509_NAME_add_entry_by_txt(
      name, "CN", MBSTRING_UTF8,
      reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  return cert;
}

// Adds extension `nid` with `value` (openssl config syntax).
absl::Status AddExt(X509* cert, X509* issuer, int nid,
                    const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ptr<X509_EXTENSION> ext(
      X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate extension ", OBJ_nid2sn(nid), " = ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckValidity(absl::Duration validity) {
  if (validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("certificate validity must be > 0");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PemPair> NewCertAuthority(const std::string& common_name,
                                         absl::Duration validity) {
  if (absl::Status st = CheckValidity(validity); !st.ok()) return st;
  Ptr<EVP_PKEY> key = NewKey();
  if (!key) return Fail("cannot generate a P-256 key");
  auto cert = NewCert(key.get(), common_name, validity);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  X509_set_issuer_name(c, X509_get_subject_name(c));
  for (const auto& [nid, value] :
       {std::pair<int, std::string>{NID_basic_constraints,
                                    "critical,CA:TRUE,pathlen:0"},
        {NID_key_usage, "critical,keyCertSign,cRLSign"},
        {NID_subject_key_identifier, "hash"}}) {
    if (absl::Status st = AddExt(c, c, nid, value); !st.ok()) return st;
  }
  if (X509_sign(c, key.get(), EVP_sha256()) == 0) return Fail("signing");
  return PemPair{ToPem(c), ToPem(key.get())};
}

absl::StatusOr<PemPair> IssueCert(const PemPair& ca,
                                  const std::string& common_name,
                                  const std::vector<std::string>& dns_names,
                                  const std::vector<std::string>& ips,
                                  absl::Duration validity) {
  if (absl::Status st = CheckValidity(validity); !st.ok()) return st;
  if (dns_names.empty() && ips.empty()) {
    return absl::InvalidArgumentError(
        "a certificate needs at least one DNS name or IP");
  }
  Ptr<BIO> cbio(
      BIO_new_mem_buf(ca.cert.data(), static_cast<int>(ca.cert.size())));
  Ptr<X509> ca_cert(PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr));
  Ptr<BIO> kbio(
      BIO_new_mem_buf(ca.key.data(), static_cast<int>(ca.key.size())));
  Ptr<EVP_PKEY> ca_key(
      PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
  if (!ca_cert || !ca_key ||
      X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    return absl::InvalidArgumentError(
        "the CA certificate or key does not parse, or they do not match");
  }
  Ptr<EVP_PKEY> key = NewKey();
  if (!key) return Fail("cannot generate a P-256 key");
  auto cert = NewCert(key.get(), common_name, validity);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  X509_set_issuer_name(c, X509_get_subject_name(ca_cert.get()));
  std::vector<std::string> alt;
  for (const std::string& d : dns_names) alt.push_back("DNS:" + d);
  for (const std::string& ip : ips) alt.push_back("IP:" + ip);
  for (const auto& [nid, value] :
       {std::pair<int, std::string>{NID_basic_constraints, "critical,CA:FALSE"},
        {NID_key_usage, "critical,digitalSignature"},
        {NID_ext_key_usage, "serverAuth,clientAuth"},
        {NID_subject_key_identifier, "hash"},
        {NID_authority_key_identifier, "keyid:always"},
        {NID_subject_alt_name, absl::StrJoin(alt, ",")}}) {
    if (absl::Status st = AddExt(c, ca_cert.get(), nid, value); !st.ok()) {
      return st;
    }
  }
  if (X509_sign(c, ca_key.get(), EVP_sha256()) == 0) return Fail("signing");
  return PemPair{ToPem(c), ToPem(key.get())};
}

absl::Status WritePrivateFile(const std::string& path,
                              const std::string& text) {
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path));
  const bool ok =
      write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  if (!ok) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace latentkv::auth
