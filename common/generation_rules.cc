#include "common/generation_rules.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace latentkv {
namespace {

bool InRange(float v, float lo, float hi) { return v >= lo && v <= hi; }

absl::Status ValidateControls(const LogitControls& c,
                              const GenerationLimits& limits) {
  auto id_ok = [&](int32_t t) { return t >= 0 && t < limits.vocab_size; };
  if (!(c.repetition_penalty > 0.0f && c.repetition_penalty <= 10.0f)) {
    return absl::InvalidArgumentError("repetition_penalty must be in (0, 10]");
  }
  if (!InRange(c.frequency_penalty, -2.0f, 2.0f)) {
    return absl::InvalidArgumentError("frequency_penalty must be in [-2, 2]");
  }
  if (!InRange(c.presence_penalty, -2.0f, 2.0f)) {
    return absl::InvalidArgumentError("presence_penalty must be in [-2, 2]");
  }
  if (!InRange(c.min_p, 0.0f, 1.0f)) {
    return absl::InvalidArgumentError("min_p must be in [0, 1]");
  }
  if (c.logit_bias.size() > kMaxLogitBias) {
    return absl::InvalidArgumentError(
        absl::StrCat("logit_bias has more than ", kMaxLogitBias, " entries"));
  }
  for (const auto& [id, bias] : c.logit_bias) {
    if (!id_ok(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias token id ", id, " outside the vocabulary"));
    }
    if (!InRange(bias, -100.0f, 100.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias of token ", id, " must be in [-100, 100]"));
    }
  }
  if (c.stop_token_ids.size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stop_token_ids has more than ", kMaxStopTokenIds, " entries"));
  }
  for (int32_t id : c.stop_token_ids) {
    if (!id_ok(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop token id ", id, " outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

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
  if (p.logprobs < -1 || p.logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs must be in [0, ", kMaxTopLogprobs, "]"));
  }
  if (p.prompt_logprobs && p.logprobs < 0) {
    return absl::InvalidArgumentError("prompt_logprobs needs logprobs");
  }
  if (p.controls != nullptr) return ValidateControls(*p.controls, limits);
  return absl::OkStatus();
}

}  // namespace latentkv
