#include "coordinator/http/openai_api.h"

#include <cmath>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/generation_rules.h"
#include "coordinator/http/logprobs_json.h"
#include "coordinator/http/request_fields.h"
#include "coordinator/http/structured_output_json.h"
#include "coordinator/http/tool_calls.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {
namespace {

namespace pb = ::latentkv::v1;
using json = nlohmann::json;

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

ApiError Unsupported(const std::string& param) {
  return Bad(param, absl::StrCat("'", param, "' is not supported"));
}

// Whether object `j` has `key` holding the string `want` (json::value with
// a string default throws when the key holds another type).
bool IsStringField(const json& j, const char* key, const char* want) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() && it->get<std::string>() == want;
}

// An integer field (JSON integers only; 3.0 is refused like OpenAI does).
std::optional<ApiError> GetInt(const json& body, const char* key, int64_t lo,
                               int64_t hi, std::optional<int64_t>* out) {
  if (!Present(body, key)) return std::nullopt;
  const json& v = body[key];
  if (!v.is_number_integer()) {
    return Bad(key, absl::StrCat("'", key, "' must be an integer"));
  }
  const int64_t x =
      v.is_number_unsigned()
          ? static_cast<int64_t>(std::min<uint64_t>(
                v.get<uint64_t>(), std::numeric_limits<int64_t>::max()))
          : v.get<int64_t>();
  if (x < lo || x > hi) {
    return Bad(key, absl::StrCat("'", key, "' must be in [", lo, ", ", hi,
                                 "], got ", x));
  }
  *out = x;
  return std::nullopt;
}

std::optional<ApiError> GetNumber(const json& body, const char* key,
                                  std::optional<double>* out) {
  if (!Present(body, key)) return std::nullopt;
  const json& v = body[key];
  if (!v.is_number() || !std::isfinite(v.get<double>())) {
    return Bad(key, absl::StrCat("'", key, "' must be a number"));
  }
  *out = v.get<double>();
  return std::nullopt;
}

std::optional<ApiError> GetBool(const json& body, const char* key, bool* out) {
  if (!Present(body, key)) return std::nullopt;
  if (!body[key].is_boolean()) {
    return Bad(key, absl::StrCat("'", key, "' must be a boolean"));
  }
  *out = body[key].get<bool>();
  return std::nullopt;
}

// One prompt: a non-empty string or non-empty token ids.
std::optional<ApiError> ParseOnePrompt(const json& p, PromptInput* out) {
  if (p.is_string()) {
    out->text = p.get<std::string>();
    if (out->text.empty()) return Bad("prompt", "'prompt' is empty");
    return std::nullopt;
  }
  if (p.is_array() && !p.empty()) {
    for (const json& t : p) {
      if (!t.is_number_integer()) {
        return Bad("prompt",
                   "'prompt' must be a string, token ids, or a list of "
                   "either");
      }
      const int64_t id = t.get<int64_t>();
      if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
        return Bad("prompt", absl::StrCat("token id ", id, " is invalid"));
      }
      out->token_ids.push_back(static_cast<int32_t>(id));
    }
    return std::nullopt;
  }
  return Bad("prompt",
             "'prompt' must be a non-empty string, token ids, or a list of "
             "either");
}

// "prompt": a string, token ids, or a list of strings / of token-id lists
// (several prompts: the first into `g`, the rest into `more`).
std::optional<ApiError> ParsePrompt(const json& body, pb::GenerateRequest* g,
                                    std::vector<PromptInput>* more) {
  if (!Present(body, "prompt")) return Bad("prompt", "'prompt' is required");
  const json& p = body["prompt"];
  std::vector<PromptInput> prompts;
  if (p.is_array() && !p.empty() && (p[0].is_string() || p[0].is_array())) {
    if (p.size() > static_cast<size_t>(kMaxChoices)) {
      return Bad("prompt",
                 absl::StrCat("at most ", kMaxChoices, " prompts per request"));
    }
    for (const json& one : p) {
      if (!(one.is_string() || one.is_array())) {
        return Bad("prompt",
                   "a list of prompts must hold strings or token "
                   "id lists");
      }
      prompts.emplace_back();
      if (auto e = ParseOnePrompt(one, &prompts.back())) return e;
    }
  } else {
    prompts.emplace_back();
    if (auto e = ParseOnePrompt(p, &prompts.back())) return e;
  }
  if (prompts[0].token_ids.empty()) {
    g->set_prompt(prompts[0].text);
  } else {
    *g->mutable_prompt_token_ids() = {prompts[0].token_ids.begin(),
                                      prompts[0].token_ids.end()};
  }
  more->assign(std::make_move_iterator(prompts.begin() + 1),
               std::make_move_iterator(prompts.end()));
  return std::nullopt;
}

// An assistant message's "tool_calls": [{"id", "type": "function",
// "function": {"name", "arguments"}}], kept in that shape.
std::optional<ApiError> ParseMessageToolCalls(const json& calls,
                                              nlohmann::ordered_json* out) {
  const char* kShape =
      "a message's 'tool_calls' must be [{\"id\", \"type\": \"function\", "
      "\"function\": {\"name\", \"arguments\"}}]";
  if (!calls.is_array()) return Bad("messages", kShape);
  *out = nlohmann::ordered_json::array();
  for (const json& c : calls) {
    if (!c.is_object() || !c.contains("function") ||
        !c["function"].is_object() || !c["function"].contains("name") ||
        !c["function"]["name"].is_string() ||
        (Present(c, "type") && !IsStringField(c, "type", "function")) ||
        (Present(c, "id") && !c["id"].is_string())) {
      return Bad("messages", kShape);
    }
    const json& f = c["function"];
    std::string args = "{}";
    if (Present(f, "arguments")) {
      if (!f["arguments"].is_string()) return Bad("messages", kShape);
      args = f["arguments"].get<std::string>();
    }
    nlohmann::ordered_json call;
    call["id"] = Present(c, "id") ? c["id"].get<std::string>() : "";
    call["type"] = "function";
    call["function"] = {{"name", f["name"].get<std::string>()},
                        {"arguments", std::move(args)}};
    out->push_back(std::move(call));
  }
  return std::nullopt;
}

std::optional<ApiError> ParseMessages(const json& body,
                                      std::vector<ChatMessage>* out) {
  if (!Present(body, "messages") || !body["messages"].is_array() ||
      body["messages"].empty()) {
    return Bad("messages", "'messages' must be a non-empty array");
  }
  for (const json& m : body["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Bad("messages", "each message needs a string 'role'");
    }
    ChatMessage cm;
    cm.role = m["role"].get<std::string>();
    const json content = m.contains("content") ? m["content"] : json();
    if (content.is_string()) {
      cm.content = content.get<std::string>();
    } else if (content.is_array()) {
      for (const json& part : content) {
        if (!part.is_object() || !IsStringField(part, "type", "text") ||
            !part.contains("text") || !part["text"].is_string()) {
          return Bad("messages",
                     "only text content parts ({\"type\":\"text\"}) are "
                     "supported");
        }
        cm.content += part["text"].get<std::string>();
      }
    } else if (!content.is_null()) {
      return Bad("messages", "message 'content' must be a string or parts");
    }
    if (Present(m, "tool_calls")) {
      if (auto e = ParseMessageToolCalls(m["tool_calls"], &cm.tool_calls)) {
        return e;
      }
    }
    for (const auto& [key, field] :
         {std::pair{"tool_call_id", &cm.tool_call_id},
          std::pair{"name", &cm.name}}) {
      if (!Present(m, key)) continue;
      if (!m[key].is_string()) {
        return Bad("messages",
                   absl::StrCat("a message's '", key, "' must be a string"));
      }
      *field = m[key].get<std::string>();
    }
    out->push_back(std::move(cm));
  }
  return std::nullopt;
}

// presence_penalty, frequency_penalty (OpenAI), repetition_penalty, min_p,
// stop_token_ids (vLLM) and logit_bias ({"token id": bias}); ranges are the
// coordinator's (common/generation_rules.h).
std::optional<ApiError> ParseLogitControls(const json& j,
                                           pb::SamplingParams* sp) {
  std::optional<double> v;
  if (auto e = GetNumber(j, "presence_penalty", &v)) return e;
  if (v) sp->set_presence_penalty(static_cast<float>(*v));
  v.reset();
  if (auto e = GetNumber(j, "frequency_penalty", &v)) return e;
  if (v) sp->set_frequency_penalty(static_cast<float>(*v));
  v.reset();
  if (auto e = GetNumber(j, "repetition_penalty", &v)) return e;
  if (v) sp->set_repetition_penalty(static_cast<float>(*v));
  v.reset();
  if (auto e = GetNumber(j, "min_p", &v)) return e;
  if (v) sp->set_min_p(static_cast<float>(*v));
  if (Present(j, "logit_bias")) {
    const json& lb = j["logit_bias"];
    if (!lb.is_object()) {
      return Bad("logit_bias", "'logit_bias' must map token ids to numbers");
    }
    for (const auto& [key, bias] : lb.items()) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(key, &id) || id < 0 || !bias.is_number()) {
        return Bad("logit_bias", "'logit_bias' must map token ids to numbers");
      }
      (*sp->mutable_logit_bias())[id] = bias.get<float>();
    }
  }
  if (Present(j, "stop_token_ids")) {
    const json& ids = j["stop_token_ids"];
    if (!ids.is_array()) {
      return Bad("stop_token_ids", "'stop_token_ids' must be token ids");
    }
    for (const json& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Bad("stop_token_ids", "'stop_token_ids' must be token ids");
      }
      sp->add_stop_token_ids(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  return std::nullopt;
}

// A field nobody here reads is an error, never silence (a client that
// sends "guided_json" must not get unconstrained text). Fields of OpenAI's
// API with no effect on the output are accepted and ignored.
std::optional<ApiError> RefuseUnknown(Endpoint ep, const json& body) {
  static const absl::flat_hash_set<std::string>* const kCommon =
      new absl::flat_hash_set<std::string>{
          // read
          "model", "stream", "stream_options", "max_tokens", "temperature",
          "top_p", "top_k", "seed", "stop", "n", "ignore_eos",
          "return_token_ids", "kv_cache_mode", "presence_penalty",
          "frequency_penalty", "repetition_penalty", "min_p", "logit_bias",
          "stop_token_ids", "logprobs", "top_logprobs",
          // structured output (structured_output_json.h)
          "response_format", "guided_json", "guided_regex", "guided_choice",
          "guided_grammar", "structured_outputs",
          // refused by RefuseUnsupported unless off
          "best_of", "functions", "function_call",
          // no effect on the output: accepted, ignored
          "user", "metadata", "store", "service_tier"};
  static const absl::flat_hash_set<std::string>* const kCompletions =
      new absl::flat_hash_set<std::string>{"prompt", "echo", "suffix"};
  static const absl::flat_hash_set<std::string>* const kChat =
      new absl::flat_hash_set<std::string>{"messages", "max_completion_tokens",
                                           "tools", "tool_choice",
                                           "parallel_tool_calls"};
  const auto& own = ep == Endpoint::kChat ? *kChat : *kCompletions;
  for (const auto& [key, value] : body.items()) {
    if (!kCommon->contains(key) && !own.contains(key)) {
      return Bad(key,
                 absl::StrCat("unrecognized request argument: '", key, "'"));
    }
  }
  return std::nullopt;
}

// Completions: "logprobs": N (0..20) alternatives. Chat: "logprobs": true,
// and "top_logprobs": N (0..20), which needs it. Absent, null or false: none.
std::optional<ApiError> ParseLogprobs(Endpoint ep, const json& body,
                                      pb::SamplingParams* sp) {
  std::optional<int64_t> top;
  if (ep == Endpoint::kCompletions) {
    if (Present(body, "logprobs") && body["logprobs"].is_boolean()) {
      if (body["logprobs"].get<bool>()) {
        return Bad("logprobs", "'logprobs' must be an integer in [0, 20]");
      }
      return std::nullopt;
    }
    if (auto e = GetInt(body, "logprobs", 0, kMaxTopLogprobs, &top)) return e;
    if (top) sp->set_logprobs(static_cast<uint32_t>(*top));
    return std::nullopt;
  }
  bool on = false;
  if (auto e = GetBool(body, "logprobs", &on)) return e;
  if (auto e = GetInt(body, "top_logprobs", 0, kMaxTopLogprobs, &top)) {
    return e;
  }
  if (top && !on) {
    return Bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  }
  if (on) sp->set_logprobs(static_cast<uint32_t>(top.value_or(0)));
  return std::nullopt;
}

std::optional<ApiError> RefuseUnsupported(Endpoint ep, const json& body) {
  if (Present(body, "suffix")) return Unsupported("suffix");
  std::optional<int64_t> best_of;
  if (auto e = GetInt(body, "best_of", 1, 1 << 20, &best_of)) return e;
  if (best_of && *best_of != 1) return Unsupported("best_of");
  // The deprecated forms of tools and tool_choice.
  for (const char* k : {"functions", "function_call"}) {
    if (Present(body, k)) {
      return Bad(k, absl::StrCat("'", k,
                                 "' is not supported: use 'tools' and "
                                 "'tool_choice'"));
    }
  }
  return std::nullopt;
}

json ChoiceTokens(const ResponseMeta& meta, const std::vector<int32_t>& ids) {
  return meta.return_token_ids ? json(ids) : json();
}

json Base(const ResponseMeta& meta, const char* object) {
  json j{{"id", meta.id},
         {"object", object},
         {"created", meta.created},
         {"model", meta.model}};
  if (meta.seed) j["seed"] = *meta.seed;
  return j;
}

json FinishJson(pb::FinishReason r, bool called) {
  if (called && r == pb::FINISH_REASON_STOP) return "tool_calls";
  const std::string s = FinishReasonName(r);
  return s.empty() ? json() : json(s);
}

json UsageJson(const pb::Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens()},
              {"completion_tokens", u.completion_tokens()},
              {"total_tokens", u.prompt_tokens() + u.completion_tokens()}};
}

}  // namespace

std::optional<ApiError> ParseChatMessages(const json& body,
                                          std::vector<ChatMessage>* out) {
  return ParseMessages(body, out);
}

std::string ErrorJson(const ApiError& e) {
  json err{{"message", e.message},
           {"type", e.type},
           {"param", e.param.empty() ? json() : json(e.param)},
           {"code", e.code.empty() ? json() : json(e.code)}};
  return Dump(json{{"error", err}});
}

ApiError FromGrpcStatus(const grpc::Status& s) {
  ApiError e;
  e.message = s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      e.http_status = 400;
      break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      // gRPC's own message-size limit is the request's size, not load.
      if (e.message.find("larger than max") != std::string::npos) {
        e.http_status = 413;
        e.code = "request_too_large";
        break;
      }
      e.http_status = 429;
      e.type = "rate_limit_error";
      e.code = "rate_limit_exceeded";
      break;
    case grpc::StatusCode::UNAUTHENTICATED:
      e.http_status = 401;
      e.code = "invalid_api_key";
      break;
    case grpc::StatusCode::NOT_FOUND:
      e.http_status = 404;
      e.code = "not_found";
      break;
    case grpc::StatusCode::UNAVAILABLE:
      e.http_status = 503;
      e.type = "server_error";
      e.code = "service_unavailable";
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      e.http_status = 504;
      e.type = "server_error";
      e.code = "timeout";
      break;
    case grpc::StatusCode::CANCELLED:
      e.http_status = 499;  // the client closed the request
      e.type = "server_error";
      e.code = "cancelled";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
  }
  return e;
}

bool JsonNestingExceeds(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > max_depth) return true;
        break;
      case ']':
      case '}':
        --depth;
        break;
      default:
        break;
    }
  }
  return false;
}

std::optional<ApiError> ParseRequest(Endpoint endpoint, std::string_view body,
                                     ParsedRequest* out) {
  if (JsonNestingExceeds(body, kMaxJsonDepth)) {
    return Bad("", absl::StrCat("the request body nests arrays and objects "
                                "deeper than ",
                                kMaxJsonDepth, " levels"));
  }
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad("", "the request body is not valid JSON");
  if (!j.is_object()) return Bad("", "the request body must be a JSON object");
  *out = ParsedRequest();
  out->endpoint = endpoint;
  if (Present(j, "model")) {
    if (!j["model"].is_string())
      return Bad("model", "'model' must be a string");
    out->model = j["model"].get<std::string>();
  }
  if (auto e = RefuseUnknown(endpoint, j)) return e;
  if (auto e = RefuseUnsupported(endpoint, j)) return e;
  std::optional<int64_t> n;
  if (auto e = GetInt(j, "n", 1, kMaxChoices, &n)) return e;
  out->n = static_cast<int>(n.value_or(1));
  if (auto e = GetBool(j, "stream", &out->stream)) return e;
  if (Present(j, "stream_options")) {
    const json& so = j["stream_options"];
    if (!so.is_object()) {
      return Bad("stream_options", "'stream_options' must be an object");
    }
    if (auto e = GetBool(so, "include_usage", &out->include_usage)) return e;
  }
  if (auto e = GetBool(j, "return_token_ids", &out->return_token_ids)) {
    return e;
  }

  pb::GenerateRequest& g = out->generate;
  if (endpoint == Endpoint::kChat) {
    if (auto e = ParseMessages(j, &out->messages)) return e;
  } else if (auto e = ParsePrompt(j, &g, &out->more_prompts)) {
    return e;
  }
  if ((1 + out->more_prompts.size()) * out->n > kMaxChoices) {
    return Bad("n", absl::StrCat("prompts times n is at most ", kMaxChoices));
  }
  pb::SamplingParams* sp = g.mutable_sampling();
  if (auto e = ParseStructuredOutput(body, j, sp)) return e;
  if (endpoint == Endpoint::kChat &&
      (Present(j, "tools") || Present(j, "tool_choice") ||
       Present(j, "parallel_tool_calls"))) {
    // Key order matters for the parameters' schemas (as for
    // response_format's).
    const auto ordered = nlohmann::ordered_json::parse(
        body, nullptr, /*allow_exceptions=*/false);
    if (auto e = ParseTools(ordered, &out->tools)) return e;
    if (sp->has_structured_output() &&
        (out->tools.choice == ToolChoice::kRequired ||
         out->tools.choice == ToolChoice::kNamed)) {
      return Bad("tool_choice",
                 "'tool_choice' \"required\" or a named function cannot be "
                 "combined with structured output (response_format, "
                 "guided_*)");
    }
  }
  const int64_t kMaxU32 = std::numeric_limits<uint32_t>::max();
  std::optional<int64_t> max_tokens;
  const char* max_key =
      endpoint == Endpoint::kChat && Present(j, "max_completion_tokens")
          ? "max_completion_tokens"
          : "max_tokens";
  if (auto e = GetInt(j, max_key, 1, kMaxU32, &max_tokens)) return e;
  if (max_tokens) sp->set_max_tokens(static_cast<uint32_t>(*max_tokens));
  std::optional<double> temperature, top_p;
  if (auto e = GetNumber(j, "temperature", &temperature)) return e;
  if (temperature) sp->set_temperature(static_cast<float>(*temperature));
  if (auto e = GetNumber(j, "top_p", &top_p)) return e;
  if (top_p) sp->set_top_p(static_cast<float>(*top_p));
  std::optional<int64_t> top_k, seed;
  if (auto e = GetInt(j, "top_k", -1, kMaxU32, &top_k)) return e;
  if (top_k && *top_k > 0) sp->set_top_k(static_cast<uint32_t>(*top_k));
  if (auto e =
          GetInt(j, "seed", 0, std::numeric_limits<int64_t>::max(), &seed)) {
    return e;
  }
  if (seed) sp->set_seed(static_cast<uint64_t>(*seed));
  bool ignore_eos = false;
  if (auto e = GetBool(j, "ignore_eos", &ignore_eos)) return e;
  sp->set_ignore_eos(ignore_eos);
  if (Present(j, "stop")) {
    const json& stop = j["stop"];
    if (stop.is_string()) {
      sp->add_stop(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const json& s : stop) {
        if (!s.is_string()) {
          return Bad("stop", "'stop' must be a string or strings");
        }
        sp->add_stop(s.get<std::string>());
      }
    } else {
      return Bad("stop", "'stop' must be a string or an array of strings");
    }
    for (const std::string& s : sp->stop()) {
      if (s.empty()) return Bad("stop", "stop strings must be non-empty");
    }
  }
  if (auto e = ParseLogitControls(j, sp)) return e;
  if (auto e = ParseLogprobs(endpoint, j, sp)) return e;
  out->logprobs = sp->has_logprobs();
  if (endpoint == Endpoint::kCompletions) {
    if (auto e = GetBool(j, "echo", &out->echo)) return e;
    sp->set_prompt_logprobs(out->echo && out->logprobs);
  }
  if (Present(j, "kv_cache_mode")) {
    const json& m = j["kv_cache_mode"];
    const std::string mode = m.is_string() ? m.get<std::string>() : "";
    if (mode == "full") {
      g.set_kv_cache_mode(pb::KV_CACHE_MODE_FULL);
    } else if (mode == "compressed") {
      g.set_kv_cache_mode(pb::KV_CACHE_MODE_COMPRESSED);
    } else if (mode != "default") {
      return Bad("kv_cache_mode",
                 "'kv_cache_mode' must be \"default\", \"full\" or "
                 "\"compressed\"");
    }
  }
  return std::nullopt;
}

std::string FinishReasonName(pb::FinishReason r) {
  switch (r) {
    case pb::FINISH_REASON_STOP:
      return "stop";
    case pb::FINISH_REASON_LENGTH:
      return "length";
    case pb::FINISH_REASON_CANCELLED:
      return "cancelled";
    default:
      return "";
  }
}

// A choice's index, logprobs and finish_reason.
static json ChoiceBase(const ResponseMeta& meta, const ChoicePart& part,
                       pb::FinishReason finish) {
  return json{
      {"index", part.index},
      {"logprobs", meta.logprobs ? LogprobsJson(meta.endpoint, part.logprobs,
                                                part.text_offset)
                                 : json()},
      {"finish_reason", FinishJson(finish, part.called)}};
}

std::string ResponseJson(const ResponseMeta& meta, const ChoicePart& part,
                         pb::FinishReason finish, const pb::Usage& usage) {
  return ResponseJson(meta, std::vector<ChoicePart>{part}, {finish}, usage);
}

std::string ResponseJson(const ResponseMeta& meta,
                         const std::vector<ChoicePart>& parts,
                         const std::vector<pb::FinishReason>& finishes,
                         const pb::Usage& usage) {
  const bool chat = meta.endpoint == Endpoint::kChat;
  json choices = json::array();
  for (size_t i = 0; i < parts.size(); ++i) {
    const ChoicePart& part = parts[i];
    json choice = ChoiceBase(meta, part, finishes[i]);
    if (chat) {
      choice["message"] = {
          {"role", "assistant"},
          {"content", part.text.empty() && !part.tool_calls.empty()
                          ? json()
                          : json(part.text)}};
      if (!part.tool_calls.empty()) {
        choice["message"]["tool_calls"] = part.tool_calls;
      }
    } else {
      choice["text"] = part.text;
    }
    if (meta.return_token_ids) choice["token_ids"] = part.token_ids;
    choices.push_back(std::move(choice));
  }
  json j = Base(meta, chat ? "chat.completion" : "text_completion");
  j["choices"] = std::move(choices);
  j["usage"] = UsageJson(usage);
  return Dump(j);
}

std::string ChunkJson(const ResponseMeta& meta, const ChoicePart& part,
                      pb::FinishReason finish, bool first) {
  const bool chat = meta.endpoint == Endpoint::kChat;
  json choice = ChoiceBase(meta, part, finish);
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!part.text.empty() || first) delta["content"] = part.text;
    if (!part.tool_calls.empty()) delta["tool_calls"] = part.tool_calls;
    choice["delta"] = delta;
  } else {
    choice["text"] = part.text;
  }
  if (meta.return_token_ids) {
    choice["token_ids"] = ChoiceTokens(meta, part.token_ids);
  }
  json j = Base(meta, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array({choice});
  return Dump(j);
}

void PrependEcho(
    const std::string& prompt_text,
    const google::protobuf::RepeatedPtrField<pb::TokenLogprobs>& prompt_lp,
    ChoicePart* part) {
  part->text.insert(0, prompt_text);
  part->logprobs.insert(part->logprobs.begin(), prompt_lp.begin(),
                        prompt_lp.end());
}

std::string UsageChunkJson(const ResponseMeta& meta, const pb::Usage& usage) {
  const bool chat = meta.endpoint == Endpoint::kChat;
  json j = Base(meta, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = UsageJson(usage);
  return Dump(j);
}

nlohmann::json ModelObject(const pb::ModelInfo& m, int64_t created) {
  return json{{"id", m.id()},
              {"object", "model"},
              {"created", created},
              {"owned_by", "latentkv"},
              {"max_model_len", m.max_context()}};
}

std::string ModelsJson(const pb::ListModelsResponse& models, int64_t created) {
  json data = json::array();
  for (const pb::ModelInfo& m : models.models()) {
    data.push_back(ModelObject(m, created));
  }
  return Dump(json{{"object", "list"}, {"data", data}});
}

std::string SseEvent(std::string_view data) {
  std::string out = "data: ";
  out.append(data.data(), data.size());
  return out + "\n\n";
}

}  // namespace latentkv::coordinator::http
