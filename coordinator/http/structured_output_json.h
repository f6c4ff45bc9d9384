// Structured output in the OpenAI-compatible API: the request fields that
// constrain the output, read into latentkv.v1.SamplingParams.
// structured_output (enforced by the worker's token masks, llguidance).
//
//   response_format  {"type": "text"} (nothing), {"type": "json_object"},
//                    or {"type": "json_schema", "json_schema": {"name",
//                    "schema", "strict"}}: the schema is always enforced
//                    ("strict" or not). Chat and completions.
//   vLLM's extensions, also accepted:
//   guided_json      a schema (object, or its JSON text)
//   guided_regex     a regex (Rust syntax) the whole output matches
//   guided_choice    [strings]: the output is one of them
//   guided_grammar   a context-free grammar in llguidance's Lark syntax
//   structured_outputs {"json" | "regex" | "choice" | "grammar" |
//                    "json_object": true}, the same (vLLM >= 0.10)
// At most one of these may constrain a request (400 otherwise).
// Thread-safety: pure functions.
#ifndef LATENTKV_COORDINATOR_HTTP_STRUCTURED_OUTPUT_JSON_H_
#define LATENTKV_COORDINATOR_HTTP_STRUCTURED_OUTPUT_JSON_H_

#include <optional>
#include <string_view>

#include "coordinator/http/openai_api.h"
#include "latentkv/v1/generation.pb.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {

// Sets sp->structured_output from the fields above (untouched when none
// constrains). `parsed` is `body` parsed; when it has any of the fields,
// `body` is parsed again keeping the order of object keys, since a schema's
// "properties" order is the order its output follows. A 400 ApiError for a
// malformed or conflicting field.
std::optional<ApiError> ParseStructuredOutput(std::string_view body,
                                              const nlohmann::json& parsed,
                                              latentkv::v1::SamplingParams* sp);

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_STRUCTURED_OUTPUT_JSON_H_
