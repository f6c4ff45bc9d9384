#include "common/generation_rules.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace latentkv {

absl::Status ValidateGeneration(const GenerationParams& p,
                                const GenerationLimits& limits) {
  if (p.prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  for (int32_t t : p.prompt) {
    if (t < 0 || t >= limits.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", t, " outside the vocabulary [0, ",
                       limits.vocab_size, ")"));
    }
  }
  const int64_t n = static_cast<int64_t>(p.prompt.size());
  if (n >= limits.context) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt of ", n, " tokens does not fit the context of ",
                     limits.context));
  }
  if (p.max_new_tokens <= 0) {
    return absl::InvalidArgumentError("max_tokens must be positive");
  }
  if (n + p.max_new_tokens > limits.context) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", n, " tokens) + max_tokens (", p.max_new_tokens,
                     ") exceeds the context of ", limits.context));
  }
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError(
        "temperature must be a finite number >= 0");
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError("top_p must be in (0, 1]");
  }
  if (p.top_k < 0) return absl::InvalidArgumentError("top_k must be >= 0");
  return absl::OkStatus();
}

}  // namespace latentkv
