// The logit controls of a latentkv.v1.SamplingParams (common/generation_rules.h
// LogitControls), read the same way by the coordinator (to validate) and
// the worker (to apply).
// Thread-safety: pure function.
#ifndef LATENTKV_COMMON_LOGIT_CONTROLS_PROTO_H_
#define LATENTKV_COMMON_LOGIT_CONTROLS_PROTO_H_

#include "absl/status/status.h"
#include "common/generation_rules.h"
#include "latentkv/v1/generation.pb.h"

namespace latentkv {

// Unset repetition_penalty is 1; logit_bias in token id order.
LogitControls LogitControlsFromProto(const latentkv::v1::SamplingParams& sp);

// GenerationParams::logprobs of `sp`: -1 when unset, else the count, kept
// out of range when it is (clamped to 2^20, never wrapped negative) so
// ValidateGeneration refuses it.
int32_t LogprobsCountFromProto(const latentkv::v1::SamplingParams& sp);

// InvalidArgument when sp.structured_output is set but malformed: no kind,
// json_object false, an empty or NUL-holding text, or a text over
// kMaxStructuredOutputBytes. (Whether it compiles is the worker's to say.)
absl::Status ValidateStructuredOutput(const latentkv::v1::SamplingParams& sp);

}  // namespace latentkv

#endif  // LATENTKV_COMMON_LOGIT_CONTROLS_PROTO_H_
