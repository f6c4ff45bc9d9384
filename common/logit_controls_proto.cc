// The logit controls of a SamplingParams (logit_controls_proto.h).
#include "common/logit_controls_proto.h"

#include <algorithm>

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

}  // namespace latentkv
