// Shared pieces of the API keys and the cluster credential (secret_text.h).
#include "common/auth/secret_text.h"

#include <openssl/sha.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace latentkv::auth {
namespace {
// Debian's Abseil has its own string_view type.
absl::string_view A(std::string_view s) { return {s.data(), s.size()}; }
}  // namespace

Sha256Digest Sha256(std::string_view data) {
  Sha256Digest d{};
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         d.data());
  return d;
}

bool DigestsEqual(const Sha256Digest& a, const Sha256Digest& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

absl::Status CheckSecretText(std::string_view secret, size_t min_length,
                             std::string_view what) {
  for (const char c : secret) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat(A(what), " contains whitespace or control characters"));
    }
  }
  if (secret.size() < min_length) {
    return absl::InvalidArgumentError(
        absl::StrCat(A(what), " is shorter than ", min_length, " characters"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ReadKeyFile(const std::string& file) {
  std::ifstream in(file);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the key file ", file));
  }
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(in, line)) {
    std::string key(absl::StripAsciiWhitespace(line));
    if (!key.empty() && key[0] != '#') keys.push_back(std::move(key));
  }
  return keys;
}

}  // namespace latentkv::auth
