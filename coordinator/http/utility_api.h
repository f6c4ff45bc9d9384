// The OpenAI API's neighbours that tools expect beside it (vLLM's shapes):
//   POST /tokenize    {"model"?, "prompt": string} or {"model"?,
//                     "messages": [...], "tools"?} (rendered by the chat
//                     template as a chat request with those tools is),
//                     "add_special_tokens" (default true: BOS as the
//                     tokenizer adds it) -> {"count", "max_model_len",
//                     "tokens"}
//   POST /detokenize  {"model"?, "tokens": [ids]} -> {"prompt": text}
// Parsing and JSON only; utility_routes.h serves them.
// Thread-safety: pure functions.
#ifndef LATENTKV_COORDINATOR_HTTP_UTILITY_API_H_
#define LATENTKV_COORDINATOR_HTTP_UTILITY_API_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/http/openai_api.h"
#include "latentkv/v1/generation.pb.h"

namespace latentkv::coordinator::http {

struct TokenizeBody {
  std::string model;                  // empty when absent
  std::optional<std::string> prompt;  // or messages
  std::vector<ChatMessage> messages;
  ToolRequest tools;  // with messages: the prompt a chat request would get
  bool add_special_tokens = true;
};
std::optional<ApiError> ParseTokenizeBody(std::string_view body,
                                          TokenizeBody* out);

struct DetokenizeBody {
  std::string model;
  std::vector<int32_t> tokens;
};
std::optional<ApiError> ParseDetokenizeBody(std::string_view body,
                                            DetokenizeBody* out);

std::string TokenizeJson(const std::vector<int32_t>& tokens,
                         int64_t max_model_len);
std::string DetokenizeJson(const std::string& text);

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_UTILITY_API_H_
