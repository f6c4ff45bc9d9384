// The OpenAI-compatible HTTP API's wire format: request bodies of
// POST /v1/completions and /v1/chat/completions parsed into a
// latentkv.v1.GenerateRequest, and the JSON of responses, stream chunks
// (server-sent events) and errors. Plain JSON <-> proto mapping (no
// sockets), unit-tested in coordinator/http/openai_api_test.cc.
//
// Request fields (others are ignored):
//   model            string; optional (absent: the served model)
//   prompt           completions: a string, an array of token ids, or a list
//                    of either (several prompts)
//   messages         chat: [{role, content}], content a string or an array
//                    of {"type":"text","text":...} parts (null beside
//                    tool_calls)
//   max_tokens       > 0; chat also max_completion_tokens (preferred)
//   temperature, top_p, seed, stop (string or array of strings)
//   presence_penalty, frequency_penalty, logit_bias {"token id": bias}
//   repetition_penalty, min_p, stop_token_ids   vLLM's extensions
//   (their meaning and ranges: common/generation_rules.h LogitControls)
//   n                samples per prompt, 1..128 (prompts times n <= 128;
//                    choices numbered prompt * n + sample)
//   stream, stream_options.include_usage
//   top_k            extension (0 or -1: no limit)
//   kv_cache_mode    extension: "default" | "full" | "compressed"
//   ignore_eos       extension: keep generating past EOS
//   return_token_ids extension: choices[].token_ids in responses and chunks
// Accepted and ignored (no effect on the output): user, metadata, store,
// service_tier, parallel_tool_calls.
//   logprobs         completions: N (0..20) alternatives per token; chat:
//                    true, with top_logprobs N (0..20). The raw model
//                    distribution's (latentkv.v1.SamplingParams.logprobs);
//                    format in logprobs_json.h
//   echo             completions: the prompt's text first (with logprobs,
//                    its tokens' too; the first token's null)
//   response_format, guided_json/regex/choice/grammar, structured_outputs:
//                    structured output (structured_output_json.h)
//   tools, tool_choice, parallel_tool_calls: chat's tools (tool_calls.h);
//                    messages may carry an assistant's tool_calls and a
//                    tool's tool_call_id
// Refused with 400 (not supported): best_of > 1, suffix, the deprecated
// functions/function_call, and any other field
// (never silence: "unrecognized request argument").
// Responses carry "seed": the sampling seed used (drawn at random when the
// request has none).
#ifndef LATENTKV_COORDINATOR_HTTP_OPENAI_API_H_
#define LATENTKV_COORDINATOR_HTTP_OPENAI_API_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/http/tool_types.h"
#include "grpcpp/support/status.h"
#include "latentkv/v1/generation.pb.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {

enum class Endpoint { kCompletions, kChat };

// An error as OpenAI reports it: {"error":{"message","type","param","code"}}
// with an HTTP status.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
};

std::string ErrorJson(const ApiError& e);
// INVALID_ARGUMENT/FAILED_PRECONDITION/OUT_OF_RANGE -> 400,
// RESOURCE_EXHAUSTED -> 429, NOT_FOUND -> 404, UNAVAILABLE -> 503,
// DEADLINE_EXCEEDED -> 504, CANCELLED -> 499, others -> 500.
ApiError FromGrpcStatus(const grpc::Status& s);

// One chat message. An assistant's earlier tool calls and a tool's result
// (role "tool") keep OpenAI's fields.
struct ChatMessage {
  std::string role;
  std::string content;  // "" also when null or absent
  // Assistant: [{"id", "type": "function", "function": {"name",
  // "arguments" (JSON text)}}]; null when the message has none.
  nlohmann::ordered_json tool_calls;
  std::string tool_call_id;  // tool: the call this answers
  std::string name;          // optional
};

// Most choices one request may ask for (prompts times n).
inline constexpr int kMaxChoices = 128;

// One prompt of a completions request: text, or token ids when non-empty.
struct PromptInput {
  std::string text;
  std::vector<int32_t> token_ids;
};

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;  // empty when absent
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool return_token_ids = false;  // extension
  bool logprobs = false;          // generate.sampling.logprobs is set
  // Completions' echo: the prompt's text (and, with logprobs, its tokens'
  // log-probabilities: sampling.prompt_logprobs) before the completion.
  bool echo = false;
  // Prompt (completions; chat: the caller renders `messages` into it),
  // sampling and KV cache mode. sampling.max_tokens is unset when the
  // request leaves it unset.
  latentkv::v1::GenerateRequest generate;
  std::vector<ChatMessage> messages;  // chat only
  // Completions with a list of prompts: those after the first (which is in
  // `generate`). Choices are numbered prompt * n + sample.
  std::vector<PromptInput> more_prompts;
  int n = 1;  // samples per prompt, 1..kMaxChoices
  // Chat: tools, tool_choice, parallel_tool_calls (tool_calls.h).
  ToolRequest tools;
};

// Deepest nesting of arrays and objects a request body may have. OpenAI's
// requests nest a few levels (messages -> content parts -> objects, JSON
// schemas a little deeper); 64 leaves room for any schema a client writes.
inline constexpr int kMaxJsonDepth = 64;

// True when `text` opens more than `max_depth` arrays/objects inside one
// another (outside strings; escapes honoured). One pass, no allocation: it
// runs before the parser, so hostile bodies (60,000 nested arrays) never
// reach nlohmann::json, whose copies and dumps recurse per level.
bool JsonNestingExceeds(std::string_view text, int max_depth);

// Parses a request body for `endpoint`. On error returns it (400, param set
// to the offending field; also for bodies nested deeper than kMaxJsonDepth)
// and leaves *out unspecified.
std::optional<ApiError> ParseRequest(Endpoint endpoint, std::string_view body,
                                     ParsedRequest* out);

// The "messages" array of a chat body (also /tokenize's): a 400 naming
// the field when malformed. `body` is a parsed JSON object.
std::optional<ApiError> ParseChatMessages(const nlohmann::json& body,
                                          std::vector<ChatMessage>* out);

// What every response object and chunk of one request repeats.
struct ResponseMeta {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;       // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
  bool return_token_ids = false;
  bool logprobs = false;  // choices carry "logprobs" (else null)
  // The sampling seed the coordinator used (reported as "seed").
  std::optional<uint64_t> seed;
};

// "stop", "length", or "" (unfinished: null) for the finish reason.
std::string FinishReasonName(latentkv::v1::FinishReason r);

// The generated part of a choice: its text, token ids and (with
// meta.logprobs) their log-probabilities (logprobs_json.h).
struct ChoicePart {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<latentkv::v1::TokenLogprobs> logprobs;
  size_t text_offset = 0;  // completions: bytes of the choice's text before
  int index = 0;           // the choice's "index"
  // Chat with tools: a whole reply's calls (message.tool_calls), or a
  // chunk's delta.tool_calls entries. Empty: none. With calls, a reply
  // whose text is empty has "content": null.
  nlohmann::json tool_calls = nlohmann::json::array();
  // The reply called tools: finish_reason "tool_calls" instead of "stop".
  bool called = false;
};

// Under echo: the prompt's text and (with logprobs) its tokens' entries
// first in `part` (the first chunk's, when streamed).
void PrependEcho(
    const std::string& prompt_text,
    const google::protobuf::RepeatedPtrField<latentkv::v1::TokenLogprobs>&
        prompt_logprobs,
    ChoicePart* part);

// A non-streamed response: one choice with the whole text, and usage.
std::string ResponseJson(const ResponseMeta& meta, const ChoicePart& part,
                         latentkv::v1::FinishReason finish,
                         const latentkv::v1::Usage& usage);
// Several choices (parts[i] with finishes[i]), in order.
std::string ResponseJson(
    const ResponseMeta& meta, const std::vector<ChoicePart>& parts,
    const std::vector<latentkv::v1::FinishReason>& finishes,
    const latentkv::v1::Usage& usage);
// One stream chunk: the text (and token ids) of one message; chat's first
// chunk also carries the assistant role. finish UNSPECIFIED: null.
std::string ChunkJson(const ResponseMeta& meta, const ChoicePart& part,
                      latentkv::v1::FinishReason finish, bool first);
// The final usage chunk of stream_options.include_usage (no choices).
std::string UsageChunkJson(const ResponseMeta& meta,
                           const latentkv::v1::Usage& usage);
// One model object of GET /v1/models (and GET /v1/models/{id}).
nlohmann::json ModelObject(const latentkv::v1::ModelInfo& m, int64_t created);
// GET /v1/models.
std::string ModelsJson(const latentkv::v1::ListModelsResponse& models,
                       int64_t created);
// A server-sent event carrying `data`: "data: <data>\n\n".
std::string SseEvent(std::string_view data);

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_OPENAI_API_H_
