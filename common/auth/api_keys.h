// API keys of the public API (the coordinator's gRPC Generation service and
// its OpenAI-compatible HTTP API).
//
// Keys come from --api_key (comma-separated) and/or --api_key_file (one key
// per line; blank lines and lines starting with '#' ignored; surrounding
// whitespace trimmed). Prefer the file: command lines are visible to every
// local user in /proc. Only SHA-256 digests are kept, and a presented key
// is compared against every digest without an early exit, so the time
// taken does not depend on how much of a key matched or on which key did.
//
// Clients present a key as "Authorization: Bearer <key>": the HTTP header,
// or the gRPC metadata entry "authorization" with the same value.
// Thread-safety: immutable after Load; Matches is safe from any thread.
#ifndef LATENTKV_COMMON_AUTH_API_KEYS_H_
#define LATENTKV_COMMON_AUTH_API_KEYS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/auth/secret_text.h"

namespace latentkv::auth {

class ApiKeySet {
 public:
  // An empty set: authentication off (every request passes).
  ApiKeySet() = default;

  // Keys from a comma-separated list and/or a key file (either may be
  // empty). InvalidArgument for an unreadable file, a key shorter than 16
  // characters or containing whitespace or control characters; the message
  // never contains a key.
  static absl::StatusOr<ApiKeySet> Load(std::string_view csv,
                                        const std::string& file);

  bool empty() const { return digests_.empty(); }
  size_t size() const { return digests_.size(); }

  // True when `key` is one of the keys.
  bool Matches(std::string_view key) const;

  // OK when authentication is off or `authorization` is "Bearer <key>" with
  // one of the keys (scheme case-insensitive, one space); else
  // Unauthenticated ("missing API key" / "invalid API key").
  absl::Status CheckBearer(std::string_view authorization) const;

 private:
  std::vector<Sha256Digest> digests_;
};

// The shortest key accepted: 16 characters (OpenAI's are ~50).
inline constexpr size_t kMinApiKeyLength = 16;

// The first key of an API key file (ReadKeyFile's format), what serve's
// readiness probe and the CLI client present; "" when there is none or the
// file cannot be read.
std::string FirstApiKey(const std::string& file);

}  // namespace latentkv::auth

#endif  // LATENTKV_COMMON_AUTH_API_KEYS_H_
