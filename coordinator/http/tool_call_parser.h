// Tool calls read out of a model's reply, as it streams: the text goes in
// piece by piece (Feed), and out come deltas of content and of calls (a
// call's start with its id and name, then fragments of its arguments), the
// shape of OpenAI's streamed "delta.tool_calls". A whole reply goes through
// the same parser (ParseToolOutput), so streamed and non-streamed answers
// agree.
//
// Formats (tool_types.h):
//   kHermes     content, with <tool_call>{json}</tool_call> blocks anywhere
//               in it; the object has "name" and "arguments".
//   kLlama3Json a reply whose first text (after whitespace and an optional
//               <|python_tag|>) is "{" is calls: objects with "name" and
//               "parameters" (or "arguments") joined by ";"; text after the
//               last object is content. Any other reply is content.
//
// Arguments stream as the raw JSON text of the arguments value as the model
// writes it (valid JSON once the call ends, when the model's is); a value
// that is a JSON string (some models quote their arguments) is decoded at
// its end. A call starts once its name is read; a block that is not a JSON
// object with a string "name" is passed on as content, unless the reply
// ends first. Whitespace next to calls is dropped (content after calls
// keeps the line breaks that separate it from content before them); a
// reply without calls keeps all of its text.
// Cost: each byte is scanned once (O(reply) over a whole reply).
// Thread-safety: one thread uses a parser.
#ifndef LATENTKV_COORDINATOR_HTTP_TOOL_CALL_PARSER_H_
#define LATENTKV_COORDINATOR_HTTP_TOOL_CALL_PARSER_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/http/tool_types.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {

struct ToolDelta {
  enum class Kind { kContent, kCallStart, kArguments };
  Kind kind = Kind::kContent;
  int call = 0;      // kCallStart, kArguments: the call's index, from 0
  std::string text;  // kContent: text; kArguments: a fragment
  std::string id;    // kCallStart: "call_..."
  std::string name;  // kCallStart: the function
};

class ToolCallParser {
 public:
  explicit ToolCallParser(ToolCallFormat format);

  // The deltas `text` completes (text that may still turn out to be part
  // of a call is held back).
  std::vector<ToolDelta> Feed(std::string_view text);
  // The reply has ended: what was held back.
  std::vector<ToolDelta> Finish();
  // Calls started so far.
  int calls() const { return calls_; }

 private:
  enum class Mode {
    kContent,      // content; Hermes: looking for <tool_call>
    kLlamaStart,   // Llama 3: undecided (whitespace, <|python_tag|>)
    kObjectStart,  // before a call's "{"
    kObject,       // inside a call's object
    kAfterObject,  // Hermes: before </tool_call>; Llama 3: before ";"
  };
  // Scanning state inside a call object, at its top level.
  enum class Top { kKey, kInKey, kColon, kValue, kInValue, kAfterValue };
  enum class Value { kString, kNested, kPrimitive };  // object/array: nested

  void Step(std::vector<ToolDelta>* out);  // as far as text_ allows
  // Content from text_[from, to), with the whitespace rule above.
  void Content(size_t from, size_t to, std::vector<ToolDelta>* out);
  void BeginObject(size_t at);
  // Scans the object from scan_; true when it ended (or failed: failed_).
  bool ScanObject();
  void ValueEnded(size_t end);
  // The call's start and the arguments read so far.
  void EmitCall(std::vector<ToolDelta>* out);
  // After the object (or where it failed, scan_): ends its call; a block
  // that never started a call becomes content (text_[block_start_, scan_)).
  void EndObject(std::vector<ToolDelta>* out);
  void FlushContent(std::vector<ToolDelta>* out);

  const ToolCallFormat format_;
  std::string text_;  // everything fed
  size_t pos_ = 0;    // first byte not yet consumed
  Mode mode_;
  int calls_ = 0;
  std::string held_ws_;  // whitespace content not yet passed on
  bool content_sent_ = false;
  bool plain_ = false;  // Llama 3: the reply is content

  // The object being scanned.
  size_t block_start_ = 0;  // where its block began (the tag, for Hermes)
  size_t scan_ = 0;         // next byte to scan
  Top top_ = Top::kKey;
  int depth_ = 0;  // nesting inside the current value
  bool in_string_ = false, escaped_ = false;
  Value value_ = Value::kPrimitive;  // the top-level value being scanned
  size_t key_start_ = 0, value_start_ = 0;
  std::string key_;
  bool failed_ = false;
  bool has_name_ = false;
  std::string name_;
  bool args_started_ = false, args_done_ = false;
  Value args_kind_ = Value::kPrimitive;
  size_t args_start_ = 0, args_end_ = 0;
  bool call_started_ = false;
  size_t args_sent_ = 0;  // text_ offset of the next argument byte to send
};

// A whole reply: its content (text outside calls) and its calls in
// OpenAI's shape, [{"id", "type": "function", "function": {"name",
// "arguments"}}].
struct ToolOutput {
  std::string content;
  nlohmann::json tool_calls = nlohmann::json::array();
};
ToolOutput ParseToolOutput(ToolCallFormat format, std::string_view reply);

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_TOOL_CALL_PARSER_H_
