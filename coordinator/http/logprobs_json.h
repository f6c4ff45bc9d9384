// The "logprobs" object of an OpenAI choice, from the coordinator's
// per-token log-probabilities (latentkv.v1.TokenLogprobs, whose token bytes
// the coordinator fills).
//
// Completions (legacy format):
//   {"tokens": [str], "token_logprobs": [f], "top_logprobs": [{str: f}] or
//    null when no alternatives were asked, "text_offset": [int]}
// Chat:
//   {"content": [{"token": str, "logprob": f, "bytes": [int],
//                 "top_logprobs": [{"token", "logprob", "bytes"}]}],
//    "refusal": null}
// A token whose bytes are not valid UTF-8 on their own (part of a
// multi-byte character) is written with U+FFFD in "token"; "bytes" keeps the
// exact bytes. -inf log-probabilities are written as -9999.0 (JSON has no
// infinity; OpenAI's clients read numbers); NaN (echo's first prompt token,
// which has none) as null, its top_logprobs entry null too. Thread-safe (pure
// functions).
#ifndef LATENTKV_COORDINATOR_HTTP_LOGPROBS_JSON_H_
#define LATENTKV_COORDINATOR_HTTP_LOGPROBS_JSON_H_

#include <cstddef>
#include <vector>

#include "coordinator/http/openai_api.h"
#include "latentkv/v1/generation.pb.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {

// `text_offset`: the byte offset of the first token's text in the choice's
// whole text (completions' text_offset; unused for chat).
nlohmann::json LogprobsJson(Endpoint endpoint,
                            const std::vector<latentkv::v1::TokenLogprobs>& lp,
                            size_t text_offset);

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_LOGPROBS_JSON_H_
