// /tokenize and /detokenize bodies (utility_api.h).
#include "coordinator/http/utility_api.h"

#include <algorithm>
#include <initializer_list>
#include <limits>

#include "coordinator/http/request_fields.h"
#include "coordinator/http/tool_calls.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {
namespace {

using json = nlohmann::json;

// The parsed object of `body`, or a 400.
std::optional<ApiError> ParseObject(std::string_view body, json* out) {
  if (JsonNestingExceeds(body, kMaxJsonDepth)) {
    return Bad("", "the request body is nested too deeply");
  }
  *out = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded() || !out->is_object()) {
    return Bad("", "the request body must be a JSON object");
  }
  return std::nullopt;
}

std::optional<ApiError> ModelField(const json& j, std::string* model) {
  if (!j.contains("model") || j["model"].is_null()) return std::nullopt;
  if (!j["model"].is_string()) return Bad("model", "'model' must be a string");
  *model = j["model"].get<std::string>();
  return std::nullopt;
}

// A 400 naming the first key of `j` not in `known`.
std::optional<ApiError> RefuseOtherKeys(
    const json& j, std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : j.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return Bad(key, "unrecognized request argument: '" + key + "'");
    }
  }
  return std::nullopt;
}

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

std::optional<ApiError> ParseTokenizeBody(std::string_view body,
                                          TokenizeBody* out) {
  json j;
  if (auto e = ParseObject(body, &j)) return e;
  *out = TokenizeBody();
  if (auto e = ModelField(j, &out->model)) return e;
  if (auto e =
          RefuseOtherKeys(j, {"model", "prompt", "messages", "tools",
                              "add_special_tokens", "add_generation_prompt"})) {
    return e;
  }
  if (j.contains("add_special_tokens")) {
    if (!j["add_special_tokens"].is_boolean()) {
      return Bad("add_special_tokens",
                 "'add_special_tokens' must be a boolean");
    }
    out->add_special_tokens = j["add_special_tokens"].get<bool>();
  }
  const bool has_prompt = j.contains("prompt"),
             has_messages = j.contains("messages");
  if (has_prompt == has_messages) {
    return Bad("prompt", "give either 'prompt' or 'messages'");
  }
  if (has_prompt) {
    if (!j["prompt"].is_string()) {
      return Bad("prompt", "'prompt' must be a string");
    }
    out->prompt = j["prompt"].get<std::string>();
    if (Present(j, "tools")) {
      return Bad("tools", "'tools' goes with 'messages'");
    }
    return std::nullopt;
  }
  if (Present(j, "tools")) {
    // Key order kept, as for chat requests (tool_calls.h).
    const auto ordered = nlohmann::ordered_json::parse(
        body, nullptr, /*allow_exceptions=*/false);
    if (auto e = ParseTools(ordered, &out->tools)) return e;
  }
  return ParseChatMessages(j, &out->messages);
}

std::optional<ApiError> ParseDetokenizeBody(std::string_view body,
                                            DetokenizeBody* out) {
  json j;
  if (auto e = ParseObject(body, &j)) return e;
  *out = DetokenizeBody();
  if (auto e = ModelField(j, &out->model)) return e;
  if (auto e = RefuseOtherKeys(j, {"model", "tokens"})) return e;
  if (!j.contains("tokens") || !j["tokens"].is_array()) {
    return Bad("tokens", "'tokens' must be an array of token ids");
  }
  for (const json& t : j["tokens"]) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
        t.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return Bad("tokens", "'tokens' must be an array of token ids");
    }
    out->tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return std::nullopt;
}

std::string TokenizeJson(const std::vector<int32_t>& tokens,
                         int64_t max_model_len) {
  return Dump(json{{"count", tokens.size()},
                   {"max_model_len", max_model_len},
                   {"tokens", tokens}});
}

std::string DetokenizeJson(const std::string& text) {
  return Dump(json{{"prompt", text}});
}

}  // namespace latentkv::coordinator::http
