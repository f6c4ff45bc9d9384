#include "coordinator/http/tool_call_parser.h"

#include <algorithm>
#include <map>

#include "coordinator/http/tool_calls.h"

namespace latentkv::coordinator::http {
namespace {

constexpr std::string_view kOpen = "<tool_call>";
constexpr std::string_view kClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
constexpr const char* kWs = " \t\r\n";

bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// The longest suffix of `s` that is a proper prefix of `tag`.
size_t PartialTag(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n) {
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  }
  return 0;
}

// A JSON string literal's value; false when it is not one.
bool DecodeString(std::string_view literal, std::string* out) {
  const nlohmann::json j =
      nlohmann::json::parse(literal, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_string()) return false;
  *out = j.get<std::string>();
  return true;
}

void AddContent(std::vector<ToolDelta>* out, std::string text) {
  if (text.empty()) return;
  if (!out->empty() && out->back().kind == ToolDelta::Kind::kContent) {
    out->back().text += text;
    return;
  }
  out->push_back({.kind = ToolDelta::Kind::kContent, .text = std::move(text)});
}

bool IsArgumentsKey(const std::string& key) {
  return key == "arguments" || key == "parameters";
}

}  // namespace

ToolCallParser::ToolCallParser(ToolCallFormat format)
    : format_(format),
      mode_(format == ToolCallFormat::kLlama3Json ? Mode::kLlamaStart
                                                  : Mode::kContent) {}

std::vector<ToolDelta> ToolCallParser::Feed(std::string_view text) {
  text_.append(text);
  std::vector<ToolDelta> out;
  Step(&out);
  return out;
}

std::vector<ToolDelta> ToolCallParser::Finish() {
  std::vector<ToolDelta> out;
  Step(&out);
  switch (mode_) {
    case Mode::kContent:
      Content(pos_, text_.size(), &out);
      break;
    case Mode::kLlamaStart:  // undecided until the end: all content
      Content(0, text_.size(), &out);
      break;
    case Mode::kObjectStart:
      Content(block_start_, text_.size(), &out);
      break;
    case Mode::kObject:
      // Cut short (max_tokens): a started call keeps what it sent.
      if (!call_started_) Content(block_start_, text_.size(), &out);
      break;
    case Mode::kAfterObject:
      break;
  }
  pos_ = text_.size();
  FlushContent(&out);
  return out;
}

void ToolCallParser::FlushContent(std::vector<ToolDelta>* out) {
  if (calls_ == 0) AddContent(out, std::move(held_ws_));
  held_ws_.clear();
}

void ToolCallParser::Content(size_t from, size_t to,
                             std::vector<ToolDelta>* out) {
  if (from >= to) return;
  const std::string_view s(text_.data() + from, to - from);
  const size_t last = s.find_last_not_of(kWs);
  if (last == std::string_view::npos) {
    held_ws_.append(s);
    return;
  }
  std::string t = std::move(held_ws_);
  t.append(s.substr(0, last + 1));
  held_ws_.assign(s.substr(last + 1));
  // Content that follows the calls it comes after starts at its text.
  if (calls_ > 0 && !content_sent_) t.erase(0, t.find_first_not_of(kWs));
  content_sent_ = true;
  AddContent(out, std::move(t));
}

void ToolCallParser::Step(std::vector<ToolDelta>* out) {
  const bool hermes = format_ == ToolCallFormat::kHermes;
  while (true) {
    switch (mode_) {
      case Mode::kContent: {
        if (plain_ || !hermes) {
          Content(pos_, text_.size(), out);
          pos_ = text_.size();
          return;
        }
        const size_t at = text_.find(kOpen, pos_);
        if (at == std::string::npos) {
          const size_t keep =
              PartialTag(std::string_view(text_).substr(pos_), kOpen);
          Content(pos_, text_.size() - keep, out);
          pos_ = text_.size() - keep;
          return;
        }
        Content(pos_, at, out);
        block_start_ = at;
        pos_ = at + kOpen.size();
        mode_ = Mode::kObjectStart;
        continue;
      }
      case Mode::kLlamaStart: {
        size_t i = text_.find_first_not_of(kWs, pos_);
        if (i == std::string::npos) return;
        const std::string_view rest = std::string_view(text_).substr(i);
        if (rest.starts_with(kPythonTag)) {
          pos_ = i + kPythonTag.size();
          continue;
        }
        if (kPythonTag.starts_with(rest)) return;  // maybe the tag
        block_start_ = 0;  // not calls after all: the whole reply is content
        if (text_[i] == '{') {
          BeginObject(i);
          continue;
        }
        plain_ = true;
        mode_ = Mode::kContent;
        pos_ = 0;
        continue;
      }
      case Mode::kObjectStart: {
        const size_t i = text_.find_first_not_of(kWs, pos_);
        if (i == std::string::npos) return;
        if (text_[i] == '{') {
          if (!hermes) block_start_ = i;
          BeginObject(i);
          continue;
        }
        // Not a call: the tag (Hermes) is content, or (Llama 3, after
        // ";") the rest of the reply is.
        if (hermes) {
          Content(block_start_, i, out);
        } else {
          plain_ = true;
        }
        pos_ = i;
        mode_ = Mode::kContent;
        continue;
      }
      case Mode::kObject: {
        const bool ended = ScanObject();
        // A call starts once its name is read, whatever follows (the
        // stream cannot take back what it sent).
        EmitCall(out);
        if (!ended) return;
        EndObject(out);
        continue;
      }
      case Mode::kAfterObject: {
        const size_t i = text_.find_first_not_of(kWs, pos_);
        if (i == std::string::npos) return;
        const std::string_view rest = std::string_view(text_).substr(i);
        if (hermes) {
          if (rest.starts_with(kClose)) {
            pos_ = i + kClose.size();
            mode_ = Mode::kContent;
            continue;
          }
          if (kClose.starts_with(rest)) return;  // maybe the closing tag
        } else if (text_[i] == ';') {
          pos_ = i + 1;
          mode_ = Mode::kObjectStart;
          continue;
        } else {
          plain_ = true;
        }
        pos_ = i;  // no closing tag: content (or another call) follows
        mode_ = Mode::kContent;
        continue;
      }
    }
  }
}

void ToolCallParser::BeginObject(size_t at) {
  mode_ = Mode::kObject;
  scan_ = at + 1;
  top_ = Top::kKey;
  depth_ = 0;
  in_string_ = escaped_ = false;
  key_.clear();
  failed_ = has_name_ = false;
  name_.clear();
  args_kind_ = Value::kPrimitive;
  args_started_ = args_done_ = call_started_ = false;
}

bool ToolCallParser::ScanObject() {
  while (scan_ < text_.size()) {
    const char c = text_[scan_];
    switch (top_) {
      case Top::kKey:  // (a key, or the end of an empty object)
      case Top::kAfterValue:
        if (top_ == Top::kKey && c == '"') {
          key_start_ = scan_;
          escaped_ = false;
          top_ = Top::kInKey;
        } else if (top_ == Top::kAfterValue && c == ',') {
          top_ = Top::kKey;
        } else if (c == '}') {
          ++scan_;
          return true;
        } else if (!IsWs(c)) {
          failed_ = true;
          return true;
        }
        break;
      case Top::kInKey:
        if (escaped_) {
          escaped_ = false;
        } else if (c == '\\') {
          escaped_ = true;
        } else if (c == '"') {
          if (!DecodeString(std::string_view(text_).substr(
                                key_start_, scan_ + 1 - key_start_),
                            &key_)) {
            key_.clear();
          }
          top_ = Top::kColon;
        }
        break;
      case Top::kColon:
        if (c == ':') {
          top_ = Top::kValue;
        } else if (!IsWs(c)) {
          failed_ = true;
          return true;
        }
        break;
      case Top::kValue:
        if (IsWs(c)) break;
        value_start_ = scan_;
        value_ = c == '"'               ? Value::kString
                 : c == '{' || c == '[' ? Value::kNested
                                        : Value::kPrimitive;
        depth_ = value_ == Value::kNested ? 1 : 0;
        in_string_ = escaped_ = false;
        if (IsArgumentsKey(key_) && !args_started_) {  // the first only
          args_started_ = true;
          args_done_ = false;
          args_kind_ = value_;
          args_start_ = scan_;
          args_sent_ = scan_;
        }
        top_ = Top::kInValue;
        if (value_ == Value::kPrimitive) continue;  // its first byte
        break;
      case Top::kInValue:
        if (value_ == Value::kPrimitive) {
          if (c == ',' || c == '}' || IsWs(c)) {
            ValueEnded(scan_);
            top_ = Top::kAfterValue;
            continue;  // the byte belongs to what follows
          }
        } else if (in_string_ || value_ == Value::kString) {
          if (escaped_) {
            escaped_ = false;
          } else if (c == '\\') {
            escaped_ = true;
          } else if (c == '"') {
            if (value_ == Value::kString) {
              ValueEnded(scan_ + 1);
              top_ = Top::kAfterValue;
            } else {
              in_string_ = false;
            }
          }
        } else if (c == '"') {
          in_string_ = true;
        } else if (c == '{' || c == '[') {
          ++depth_;
        } else if ((c == '}' || c == ']') && --depth_ == 0) {
          ValueEnded(scan_ + 1);
          top_ = Top::kAfterValue;
        }
        break;
    }
    ++scan_;
  }
  return false;
}

void ToolCallParser::ValueEnded(size_t end) {
  const std::string_view v =
      std::string_view(text_).substr(value_start_, end - value_start_);
  if (key_ == "name" && value_ == Value::kString && !has_name_) {
    has_name_ = DecodeString(v, &name_) && !name_.empty();
  }
  if (IsArgumentsKey(key_) && args_started_ && args_start_ == value_start_) {
    args_end_ = end;
    args_done_ = true;
  }
}

void ToolCallParser::EmitCall(std::vector<ToolDelta>* out) {
  if (!call_started_) {
    if (!has_name_) return;
    call_started_ = true;
    held_ws_.clear();
    out->push_back({.kind = ToolDelta::Kind::kCallStart,
                    .call = calls_,
                    .id = NewToolCallId(),
                    .name = name_});
    ++calls_;
  }
  if (!args_started_) return;
  std::string fragment;
  if (args_kind_ == Value::kNested) {
    // Every byte scanned so far inside the value is the value's.
    const size_t limit = args_done_ ? args_end_ : scan_;
    if (limit > args_sent_) {
      fragment = text_.substr(args_sent_, limit - args_sent_);
      args_sent_ = limit;
    }
  } else if (args_done_ && args_sent_ < args_end_) {
    const std::string_view v =
        std::string_view(text_).substr(args_start_, args_end_ - args_start_);
    if (args_kind_ != Value::kString || !DecodeString(v, &fragment)) {
      fragment = std::string(v);
    }
    args_sent_ = args_end_;
  }
  if (fragment.empty()) return;
  out->push_back({.kind = ToolDelta::Kind::kArguments,
                  .call = calls_ - 1,
                  .text = std::move(fragment)});
}

void ToolCallParser::EndObject(std::vector<ToolDelta>* out) {
  if (call_started_) {
    if (!args_started_) {
      out->push_back({.kind = ToolDelta::Kind::kArguments,
                      .call = calls_ - 1,
                      .text = "{}"});
    }
  } else {
    // Not a call: its text is content.
    Content(block_start_, scan_, out);
    if (format_ == ToolCallFormat::kLlama3Json) plain_ = true;
  }
  pos_ = scan_;
  mode_ = call_started_ ? Mode::kAfterObject : Mode::kContent;
}

ToolOutput ParseToolOutput(ToolCallFormat format, std::string_view reply) {
  ToolCallParser parser(format);
  std::vector<ToolDelta> deltas = parser.Feed(reply);
  for (ToolDelta& d : parser.Finish()) deltas.push_back(std::move(d));
  ToolOutput out;
  std::map<int, nlohmann::json> calls;
  for (const ToolDelta& d : deltas) {
    switch (d.kind) {
      case ToolDelta::Kind::kContent:
        out.content += d.text;
        break;
      case ToolDelta::Kind::kCallStart:
        calls[d.call] = {{"id", d.id},
                         {"type", "function"},
                         {"function", {{"name", d.name}, {"arguments", ""}}}};
        break;
      case ToolDelta::Kind::kArguments:
        calls[d.call]["function"]["arguments"] =
            calls[d.call]["function"]["arguments"].get<std::string>() + d.text;
        break;
    }
  }
  for (auto& [index, call] : calls) out.tool_calls.push_back(std::move(call));
  return out;
}

}  // namespace latentkv::coordinator::http
