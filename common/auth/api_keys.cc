// API keys (api_keys.h).
#include "common/auth/api_keys.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace latentkv::auth {
namespace {

// Debian's Abseil has its own string_view type.
absl::string_view A(std::string_view s) { return {s.data(), s.size()}; }

absl::Status AddKey(std::string_view key, std::string_view where,
                    std::vector<Sha256Digest>* out) {
  absl::Status st = CheckSecretText(key, kMinApiKeyLength,
                                    absl::StrCat("an API key in ", A(where)));
  if (st.ok()) out->push_back(Sha256(key));
  return st;
}

}  // namespace

absl::StatusOr<ApiKeySet> ApiKeySet::Load(std::string_view csv,
                                          const std::string& file) {
  ApiKeySet set;
  for (absl::string_view k : absl::StrSplit(A(csv), ',')) {
    k = absl::StripAsciiWhitespace(k);
    if (k.empty() || k.front() == '#') continue;  // as in a key file
    absl::Status st = AddKey(std::string_view(k.data(), k.size()), "--api_key",
                             &set.digests_);
    if (!st.ok()) return st;
  }
  if (!file.empty()) {
    absl::StatusOr<std::vector<std::string>> keys = ReadKeyFile(file);
    if (!keys.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read the API key file ", file));
    }
    for (const std::string& k : *keys) {
      absl::Status st = AddKey(k, file, &set.digests_);
      if (!st.ok()) return st;
    }
  }
  return set;
}

bool ApiKeySet::Matches(std::string_view key) const {
  const Sha256Digest d = Sha256(key);
  bool any = false;
  for (const Sha256Digest& want : digests_) any |= DigestsEqual(want, d);
  return any;
}

std::string FirstApiKey(const std::string& file) {
  absl::StatusOr<std::vector<std::string>> keys = ReadKeyFile(file);
  return keys.ok() && !keys->empty() ? keys->front() : "";
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
