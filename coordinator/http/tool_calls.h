// Tools in the chat API's requests: the "tools", "tool_choice" and
// "parallel_tool_calls" fields read into a ToolRequest, the grammar that
// enforces tool_choice "required" and named choices, and the prompt text
// for chat templates that know nothing of tools.
//
//   tools        [{"type": "function", "function": {"name", "description"?,
//                "parameters"? (a JSON schema object), "strict"?}}], at most
//                kMaxTools, names unique and 1-64 of [A-Za-z0-9_-]
//   tool_choice  "none" | "auto" (default with tools) | "required" |
//                {"type": "function", "function": {"name": ...}}
//   parallel_tool_calls  boolean, default true
//
// "required" and named choices are enforced like structured output: a
// Lark grammar (llguidance's syntax, %json for each tool's call object)
// that the worker's token masks follow; they cannot be combined with
// response_format or vLLM's guided_* fields (400).
// Thread-safety: pure functions.
#ifndef LATENTKV_COORDINATOR_HTTP_TOOL_CALLS_H_
#define LATENTKV_COORDINATOR_HTTP_TOOL_CALLS_H_

#include <optional>
#include <string>
#include <vector>

#include "coordinator/http/openai_api.h"
#include "coordinator/http/tool_types.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {

inline constexpr int kMaxTools = 128;

// Reads the fields above from `body` (parsed keeping key order: a tool's
// parameter order is the order its enforced calls follow). A 400 naming
// the field when one is malformed, names a tool that is not there, or asks
// for calls without tools.
std::optional<ApiError> ParseTools(const nlohmann::ordered_json& body,
                                   ToolRequest* out);

// The Lark grammar whose language is the calls `r` allows, written in
// `format`: one or more calls ("required"; exactly one with
// parallel_tool_calls false) of any tool, or one call of the named tool.
// Each call's arguments follow the tool's "parameters" schema (any object
// when it has none). Empty for "auto" and "none", which constrain nothing.
std::string ToolCallGrammar(const ToolRequest& r, ToolCallFormat format);

// For chat templates that do not render tools: `messages` with the tools
// described in the system message (a new first one if there is none) as
// `format` expects, assistant tool calls written into their content in
// that format, and tool results as user messages (<tool_response> blocks;
// consecutive results share one message). With `r` inactive the tools are
// left out, but earlier calls and results are still written so.
std::vector<ChatMessage> WithToolsInText(const std::vector<ChatMessage>& msgs,
                                         const ToolRequest& r,
                                         ToolCallFormat format);

// A new call id: "call_" and 24 random letters and digits.
std::string NewToolCallId();

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_TOOL_CALLS_H_
