// What the API keys (api_keys.h) and the cluster credential
// (cluster_secret.h) share: SHA-256 digests compared in constant time, the
// rule a secret's text must follow, and the key file format.
// Thread-safety: pure functions.
#ifndef LATENTKV_COMMON_AUTH_SECRET_TEXT_H_
#define LATENTKV_COMMON_AUTH_SECRET_TEXT_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace latentkv::auth {

using Sha256Digest = std::array<uint8_t, 32>;
// SHA-256 from OpenSSL's libcrypto (already linked by gRPC).
Sha256Digest Sha256(std::string_view data);
// Equality that reads every byte whatever differs first.
bool DigestsEqual(const Sha256Digest& a, const Sha256Digest& b);

// InvalidArgument "<what> contains whitespace or control characters" or
// "<what> is shorter than <min_length> characters"; the secret itself never
// appears in the message.
absl::Status CheckSecretText(std::string_view secret, size_t min_length,
                             std::string_view what);

// The keys of a key file: one per line, surrounding whitespace trimmed,
// blank lines and lines starting with '#' skipped. InvalidArgument when the
// file cannot be read.
absl::StatusOr<std::vector<std::string>> ReadKeyFile(const std::string& file);

}  // namespace latentkv::auth

#endif  // LATENTKV_COMMON_AUTH_SECRET_TEXT_H_
