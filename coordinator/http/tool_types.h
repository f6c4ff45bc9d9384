// Tool calling in the chat API: what a request asks for (its "tools" and
// "tool_choice") and the text formats a model writes its calls in. Plain
// data shared by the request parser (tool_calls.h), the chat template
// (chat_template.h) and the output parser (tool_call_parser.h).
// Thread-safety: plain values.
#ifndef LATENTKV_COORDINATOR_HTTP_TOOL_TYPES_H_
#define LATENTKV_COORDINATOR_HTTP_TOOL_TYPES_H_

#include <string>

#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {

// How a model writes tool calls (the two formats vLLM's "hermes" and
// "llama3_json" parsers read):
//   kHermes     <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>
//               per call, content around them (Hermes, Qwen 2/2.5/3,
//               and latentkv's own prompt for templates without tools)
//   kLlama3Json the whole reply is {"name": ..., "parameters": {...}}
//               objects joined by ";", optionally after <|python_tag|>
//               (Llama 3.1-3.3 custom tools)
enum class ToolCallFormat { kHermes, kLlama3Json };

// "hermes" / "llama3_json".
const char* ToolCallFormatName(ToolCallFormat f);

enum class ToolChoice {
  kNone,      // no tools in the prompt, no parsing (also: no "tools")
  kAuto,      // tools in the prompt; calls parsed out of the reply
  kRequired,  // the reply is one or more calls (grammar-enforced)
  kNamed,     // the reply is one call of `named` (grammar-enforced)
};

struct ToolRequest {
  // The request's tools in OpenAI's shape, key order kept:
  // [{"type": "function", "function": {"name", "description"?,
  //   "parameters"?}}]. Names are unique, 1-64 of [A-Za-z0-9_-].
  nlohmann::ordered_json tools = nlohmann::ordered_json::array();
  ToolChoice choice = ToolChoice::kNone;
  std::string named;  // kNamed: the function's name
  // parallel_tool_calls (default true): false allows at most one call.
  bool parallel = true;

  // Whether tools go into the prompt and calls are parsed out of replies.
  bool active() const { return choice != ToolChoice::kNone && !tools.empty(); }
};

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_TOOL_TYPES_H_
