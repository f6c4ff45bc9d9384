// The logit controls of a SamplingParams (logit_controls_proto.h).
#include "common/logit_controls_proto.h"

#include <algorithm>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace latentkv {

LogitControls LogitControlsFromProto(const latentkv::v1::SamplingParams& sp) {
  LogitControls c;
  c.repetition_penalty =
      sp.has_repetition_penalty() ? sp.repetition_penalty() : 1.0f;
  c.frequency_penalty = sp.frequency_penalty();
  c.presence_penalty = sp.presence_penalty();
  c.min_p = sp.min_p();
  c.logit_bias.assign(sp.logit_bias().begin(), sp.logit_bias().end());
  std::sort(c.logit_bias.begin(), c.logit_bias.end());
  c.stop_token_ids.assign(sp.stop_token_ids().begin(),
                          sp.stop_token_ids().end());
  return c;
}

int32_t LogprobsCountFromProto(const latentkv::v1::SamplingParams& sp) {
  if (!sp.has_logprobs()) return -1;
  return static_cast<int32_t>(std::min<uint32_t>(sp.logprobs(), 1u << 20));
}

absl::Status ValidateStructuredOutput(const latentkv::v1::SamplingParams& sp) {
  if (!sp.has_structured_output()) return absl::OkStatus();
  using SO = latentkv::v1::StructuredOutput;
  const SO& so = sp.structured_output();
  std::string_view text;
  switch (so.kind_case()) {
    case SO::kJsonObject:
      if (!so.json_object()) {
        return absl::InvalidArgumentError(
            "structured_output.json_object must be true when set");
      }
      return absl::OkStatus();
    case SO::kJsonSchema:
      text = so.json_schema();
      break;
    case SO::kRegex:
      text = so.regex();
      break;
    case SO::kLark:
      text = so.lark();
      break;
    default:
      return absl::InvalidArgumentError("structured_output has no kind set");
  }
  if (text.empty() || text.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        "structured output must be non-empty text without NUL bytes");
  }
  if (text.size() > kMaxStructuredOutputBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("structured output spec of ", text.size(),
                     " bytes; at most ", kMaxStructuredOutputBytes));
  }
  return absl::OkStatus();
}

}  // namespace latentkv
