#include "coordinator/http/tool_calls.h"

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/http/request_fields.h"

namespace latentkv::coordinator::http {
namespace {

using ojson = nlohmann::ordered_json;

std::string Dump(const ojson& j) {
  return j.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
          c == '-')) {
      return false;
    }
  }
  return true;
}

std::optional<ApiError> ParseOneTool(const ojson& t,
                                     absl::flat_hash_set<std::string>* names,
                                     ojson* out) {
  if (!t.is_object() || !t.contains("type") || t["type"] != "function" ||
      !t.contains("function") || !t["function"].is_object()) {
    return Bad("tools",
               "each tool must be {\"type\": \"function\", \"function\": "
               "{...}}");
  }
  for (const auto& [key, value] : t.items()) {
    if (key != "type" && key != "function") {
      return Bad("tools", absl::StrCat("unrecognized tool field '", key, "'"));
    }
  }
  const ojson& f = t["function"];
  for (const auto& [key, value] : f.items()) {
    if (key != "name" && key != "description" && key != "parameters" &&
        key != "strict") {
      return Bad("tools",
                 absl::StrCat("unrecognized function field '", key, "'"));
    }
  }
  if (!f.contains("name") || !f["name"].is_string() ||
      !ValidName(f["name"].get<std::string>())) {
    return Bad("tools",
               "a function's 'name' must be 1-64 letters, digits, '_' or "
               "'-'");
  }
  const std::string name = f["name"].get<std::string>();
  if (!names->insert(name).second) {
    return Bad("tools", absl::StrCat("the function '", name,
                                     "' is defined more than once"));
  }
  if (Present(f, "description") && !f["description"].is_string()) {
    return Bad("tools", "a function's 'description' must be a string");
  }
  if (Present(f, "parameters") && !f["parameters"].is_object()) {
    return Bad("tools",
               "a function's 'parameters' must be a JSON schema object");
  }
  if (Present(f, "strict") && !f["strict"].is_boolean()) {
    return Bad("tools", "a function's 'strict' must be a boolean");
  }
  ojson fn = {{"name", name}};
  if (Present(f, "description")) fn["description"] = f["description"];
  if (Present(f, "parameters")) fn["parameters"] = f["parameters"];
  *out = {{"type", "function"}, {"function", std::move(fn)}};
  return std::nullopt;
}

// The key a call's arguments go under in `format`.
const char* ArgumentsKey(ToolCallFormat format) {
  return format == ToolCallFormat::kLlama3Json ? "parameters" : "arguments";
}

// The JSON schema of one call of `tool` written in `format`.
ojson CallSchema(const ojson& tool, ToolCallFormat format) {
  const ojson& f = tool["function"];
  const char* args = ArgumentsKey(format);
  ojson params =
      f.contains("parameters") ? f["parameters"] : ojson{{"type", "object"}};
  ojson properties = ojson::object();
  properties["name"] = {{"const", f["name"]}};
  properties[args] = std::move(params);
  return {{"type", "object"},
          {"properties", std::move(properties)},
          {"required", {"name", args}},
          {"additionalProperties", false}};
}

std::string ToolsText(const ToolRequest& r) {
  std::vector<std::string> lines;
  for (const ojson& t : r.tools) lines.push_back(Dump(t));
  return absl::StrJoin(lines, "\n");
}

std::string SystemText(const ToolRequest& r, ToolCallFormat format) {
  if (format == ToolCallFormat::kLlama3Json) {
    return absl::StrCat(
        "You have access to the following functions. To call a function, "
        "respond only with JSON of the form {\"name\": function name, "
        "\"parameters\": dictionary of argument name and its value}; "
        "separate several calls with \";\". Answer in plain text when no "
        "function is needed.\n\n",
        ToolsText(r));
  }
  return absl::StrCat(
      "# Tools\n\nYou may call one or more functions to assist with the "
      "user query.\n\nYou are provided with function signatures within "
      "<tools></tools> XML tags:\n<tools>\n",
      ToolsText(r),
      "\n</tools>\n\nFor each function call, return a json object with "
      "function name and arguments within <tool_call></tool_call> XML "
      "tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
      "<args-json-object>}\n</tool_call>");
}

// One earlier call of an assistant message, written in `format`. Its
// arguments are JSON text (OpenAI's shape); text that is not JSON is
// written as a JSON string.
std::string CallText(const ojson& call, ToolCallFormat format) {
  const ojson& f = call["function"];
  const std::string args_text = f["arguments"].get<std::string>();
  ojson args = ojson::parse(args_text, nullptr, /*allow_exceptions=*/false);
  if (args.is_discarded()) args = args_text;
  ojson obj = {{"name", f["name"]}, {ArgumentsKey(format), std::move(args)}};
  if (format == ToolCallFormat::kLlama3Json) return Dump(obj);
  return absl::StrCat("<tool_call>\n", Dump(obj), "\n</tool_call>");
}

}  // namespace

const char* ToolCallFormatName(ToolCallFormat f) {
  return f == ToolCallFormat::kLlama3Json ? "llama3_json" : "hermes";
}

std::optional<ApiError> ParseTools(const ojson& body, ToolRequest* out) {
  *out = ToolRequest();
  const bool has_tools = Present(body, "tools");
  if (has_tools) {
    const ojson& tools = body["tools"];
    if (!tools.is_array()) return Bad("tools", "'tools' must be an array");
    if (tools.size() > static_cast<size_t>(kMaxTools)) {
      return Bad("tools",
                 absl::StrCat("at most ", kMaxTools, " tools per request"));
    }
    absl::flat_hash_set<std::string> names;
    for (const ojson& t : tools) {
      ojson tool;
      if (auto e = ParseOneTool(t, &names, &tool)) return e;
      out->tools.push_back(std::move(tool));
    }
    out->choice = ToolChoice::kAuto;
  }
  if (Present(body, "parallel_tool_calls")) {
    if (!body["parallel_tool_calls"].is_boolean()) {
      return Bad("parallel_tool_calls",
                 "'parallel_tool_calls' must be a boolean");
    }
    out->parallel = body["parallel_tool_calls"].get<bool>();
  }
  if (!Present(body, "tool_choice")) return std::nullopt;
  const ojson& c = body["tool_choice"];
  if (c.is_string()) {
    const std::string s = c.get<std::string>();
    if (s == "none") {
      out->choice = ToolChoice::kNone;
      return std::nullopt;
    }
    if (s == "auto") return std::nullopt;
    if (s != "required") {
      return Bad("tool_choice",
                 "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                 "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    if (out->tools.empty()) {
      return Bad("tool_choice", "'tool_choice' \"required\" needs 'tools'");
    }
    out->choice = ToolChoice::kRequired;
    return std::nullopt;
  }
  if (!c.is_object() || !c.contains("type") || c["type"] != "function" ||
      !c.contains("function") || !c["function"].is_object() ||
      !c["function"].contains("name") || !c["function"]["name"].is_string()) {
    return Bad("tool_choice",
               "'tool_choice' must be \"none\", \"auto\", \"required\" or "
               "{\"type\": \"function\", \"function\": {\"name\": ...}}");
  }
  const std::string name = c["function"]["name"].get<std::string>();
  for (const ojson& t : out->tools) {
    if (t["function"]["name"] == name) {
      out->choice = ToolChoice::kNamed;
      out->named = name;
      return std::nullopt;
    }
  }
  return Bad("tool_choice", absl::StrCat("'tool_choice' names '", name,
                                         "', which is not among 'tools'"));
}

std::string ToolCallGrammar(const ToolRequest& r, ToolCallFormat format) {
  if (r.choice != ToolChoice::kRequired && r.choice != ToolChoice::kNamed) {
    return "";
  }
  ojson alternatives = ojson::array();
  for (const ojson& t : r.tools) {
    if (r.choice == ToolChoice::kNamed && t["function"]["name"] != r.named) {
      continue;
    }
    alternatives.push_back(CallSchema(t, format));
  }
  ojson schema = alternatives.size() == 1
                     ? alternatives[0]
                     : ojson{{"anyOf", std::move(alternatives)}};
  // Separators as Python's json.dumps writes them ({"a": 1, "b": 2}), the
  // form these formats' examples and training data use; no other
  // whitespace (the calls stay on one line).
  schema["x-guidance"] = {{"whitespace_flexible", false},
                          {"item_separator", ", "},
                          {"key_separator", ": "}};
  const bool many = r.parallel && r.choice == ToolChoice::kRequired;
  if (format == ToolCallFormat::kLlama3Json) {
    return absl::StrCat("start: call", many ? " (\"; \" call)*" : "",
                        "\ncall: %json ", Dump(schema), "\n");
  }
  return absl::StrCat(
      "start: call", many ? " (\"\\n\" call)*" : "",
      "\ncall: \"<tool_call>\\n\" object \"\\n</tool_call>\"\nobject: %json ",
      Dump(schema), "\n");
}

std::vector<ChatMessage> WithToolsInText(const std::vector<ChatMessage>& msgs,
                                         const ToolRequest& r,
                                         ToolCallFormat format) {
  std::vector<ChatMessage> out;
  if (r.active()) {
    const std::string text = SystemText(r, format);
    if (!msgs.empty() && msgs[0].role == "system") {
      out.push_back(msgs[0]);
      out[0].content = msgs[0].content.empty()
                           ? text
                           : absl::StrCat(msgs[0].content, "\n\n", text);
    } else {
      out.push_back(ChatMessage{.role = "system", .content = text});
    }
  }
  const size_t first =
      !out.empty() && !msgs.empty() && msgs[0].role == "system" ? 1 : 0;
  for (size_t i = first; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role == "tool") {
      const std::string block =
          absl::StrCat("<tool_response>\n", m.content, "\n</tool_response>");
      if (i > 0 && msgs[i - 1].role == "tool" && !out.empty()) {
        absl::StrAppend(&out.back().content, "\n", block);
      } else {
        out.push_back(ChatMessage{.role = "user", .content = block});
      }
      continue;
    }
    ChatMessage c{.role = m.role, .content = m.content};
    if (m.tool_calls.is_array() && !m.tool_calls.empty()) {
      std::vector<std::string> calls;
      for (const ojson& call : m.tool_calls) {
        calls.push_back(CallText(call, format));
      }
      const std::string sep =
          format == ToolCallFormat::kLlama3Json ? "; " : "\n";
      const std::string text = absl::StrJoin(calls, sep);
      c.content =
          c.content.empty() ? text : absl::StrCat(c.content, "\n", text);
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::string NewToolCallId() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local absl::BitGen gen;
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) {
    id += kAlphabet[absl::Uniform<size_t>(gen, 0, sizeof(kAlphabet) - 1)];
  }
  return id;
}

}  // namespace latentkv::coordinator::http
