// API keys (api_keys.h). SHA-256 from OpenSSL (libcrypto, already linked by
// gRPC): a well-kept implementation rather than our own.
#include "common/auth/api_keys.h"

#include <openssl/sha.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace latentkv::auth {
namespace {

// Debian's Abseil has its own string_view type.
absl::string_view A(std::string_view s) { return {s.data(), s.size()}; }
std::string_view S(absl::string_view s) { return {s.data(), s.size()}; }

std::array<uint8_t, 32> Digest(std::string_view key) {
  std::array<uint8_t, 32> d{};
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(),
         d.data());
  return d;
}

absl::Status AddKey(std::string_view raw, std::string_view where,
                    std::vector<std::array<uint8_t, 32>>* out) {
  const std::string_view key = S(absl::StripAsciiWhitespace(A(raw)));
  if (key.empty() || key.front() == '#') return absl::OkStatus();
  for (const char c : key) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat("an API key in ", A(where),
                       " contains whitespace or control characters"));
    }
  }
  if (key.size() < kMinApiKeyLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("an API key in ", A(where), " is shorter than ",
                     kMinApiKeyLength, " characters"));
  }
  out->push_back(Digest(key));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ApiKeySet> ApiKeySet::Load(std::string_view csv,
                                          const std::string& file) {
  ApiKeySet set;
  for (absl::string_view k : absl::StrSplit(A(csv), ',')) {
    if (absl::StripAsciiWhitespace(k).empty()) continue;
    absl::Status st = AddKey(S(k), "--api_key", &set.digests_);
    if (!st.ok()) return st;
  }
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read the API key file ", file));
    }
    std::string line;
    while (std::getline(in, line)) {
      absl::Status st = AddKey(line, file, &set.digests_);
      if (!st.ok()) return st;
    }
  }
  return set;
}

bool ApiKeySet::Matches(std::string_view key) const {
  const std::array<uint8_t, 32> d = Digest(key);
  uint8_t any = 0;
  for (const auto& want : digests_) {
    uint8_t diff = 0;
    for (size_t i = 0; i < want.size(); ++i) diff |= want[i] ^ d[i];
    any |= static_cast<uint8_t>(diff == 0);
  }
  return any != 0;
}

absl::Status ApiKeySet::CheckBearer(std::string_view authorization) const {
  if (empty()) return absl::OkStatus();
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "missing API key: send \"Authorization: Bearer <key>\"");
  }
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(A(authorization.substr(0, kScheme.size())),
                              A(kScheme)) ||
      !Matches(authorization.substr(kScheme.size()))) {
    return absl::UnauthenticatedError("invalid API key");
  }
  return absl::OkStatus();
}

}  // namespace latentkv::auth
