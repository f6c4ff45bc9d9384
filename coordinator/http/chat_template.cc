#include "coordinator/http/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "coordinator/http/mini_jinja.h"
#include "coordinator/http/tool_calls.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {

namespace {

// A special token in tokenizer_config.json: a string or {"content": ...}.
std::string TokenText(const nlohmann::json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") &&
      (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

jinja::Value FromJson(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::boolean:
      return jinja::Value::Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned:
      return jinja::Value::Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_float:
      return jinja::Value::Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return jinja::Value::Str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      jinja::List list;
      for (const auto& v : j) list.push_back(FromJson(v));
      return jinja::Value::Of(std::move(list));
    }
    case nlohmann::ordered_json::value_t::object: {
      jinja::Map map;
      for (const auto& [k, v] : j.items()) map.emplace(k, FromJson(v));
      return jinja::Value::Of(std::move(map));
    }
    default:
      return jinja::Value::None();
  }
}

// A message as Hugging Face templates that render tools expect it.
jinja::Value MessageValue(const ChatMessage& m) {
  jinja::Map map{{"role", jinja::Value::Str(m.role)},
                 {"content", jinja::Value::Str(m.content)}};
  if (m.tool_calls.is_array() && !m.tool_calls.empty()) {
    if (m.content.empty()) map["content"] = jinja::Value::None();
    nlohmann::ordered_json calls = m.tool_calls;
    for (auto& call : calls) {
      auto& args = call["function"]["arguments"];
      auto parsed = nlohmann::ordered_json::parse(
          args.get<std::string>(), nullptr, /*allow_exceptions=*/false);
      if (parsed.is_object()) args = std::move(parsed);
    }
    map["tool_calls"] = FromJson(calls);
  }
  if (!m.tool_call_id.empty()) {
    map["tool_call_id"] = jinja::Value::Str(m.tool_call_id);
  }
  if (!m.name.empty()) map["name"] = jinja::Value::Str(m.name);
  return jinja::Value::Of(std::move(map));
}

}  // namespace

ChatTemplate::ChatTemplate() = default;
ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) = default;

absl::StatusOr<ChatTemplate> ChatTemplate::FromJinja(
    const std::string& source, const std::string& bos_token,
    const std::string& eos_token, bool tokenizer_adds_bos,
    const std::string& origin) {
  auto t = jinja::MiniJinjaTemplate::Parse(source);
  if (!t.ok()) return t.status();
  ChatTemplate c;
  c.jinja_ = std::shared_ptr<const jinja::MiniJinjaTemplate>(std::move(*t));
  c.bos_token_ = bos_token;
  c.eos_token_ = eos_token;
  c.strip_bos_ = tokenizer_adds_bos;
  c.origin_ = origin;
  c.renders_tools_ = source.find("tools") != std::string::npos;
  if (c.renders_tools_ && source.find("<|python_tag|>") != std::string::npos) {
    c.tool_format_ = ToolCallFormat::kLlama3Json;
  }
  return c;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromModelDir(
    const std::string& model_dir, bool tokenizer_adds_bos) {
  const std::filesystem::path path =
      std::filesystem::path(model_dir) / "tokenizer_config.json";
  std::ifstream in(path);
  if (!in) return ChatTemplate();
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json cfg =
      nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (cfg.is_discarded() || !cfg.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " is not a JSON object"));
  }
  auto it = cfg.find("chat_template");
  if (it == cfg.end() || !it->is_string()) return ChatTemplate();
  return FromJinja(it->get<std::string>(), TokenText(cfg, "bos_token"),
                   TokenText(cfg, "eos_token"), tokenizer_adds_bos);
}

absl::StatusOr<std::string> ChatTemplate::Render(
    const std::vector<ChatMessage>& messages, const ToolRequest& tools) const {
  if (!renders_tools_) {
    const bool has_tool_messages =
        std::any_of(messages.begin(), messages.end(), [](const ChatMessage& m) {
          return m.role == "tool" || !m.tool_calls.empty();
        });
    if (tools.active() || has_tool_messages) {
      ChatTemplate plain;  // the same template, tools written as text
      plain.jinja_ = jinja_;
      plain.bos_token_ = bos_token_;
      plain.eos_token_ = eos_token_;
      plain.strip_bos_ = strip_bos_;
      plain.renders_tools_ = true;  // nothing more to rewrite
      return plain.Render(WithToolsInText(messages, tools, tool_format_));
    }
  }
  if (jinja_ == nullptr) {
    std::string out;
    for (const ChatMessage& m : messages) {
      absl::StrAppend(&out, m.role, ": ", m.content, "\n");
    }
    return out + "assistant:";
  }
  jinja::List list;
  for (const ChatMessage& m : messages) list.push_back(MessageValue(m));
  jinja::Map vars = {{"messages", jinja::Value::Of(std::move(list))},
                     {"add_generation_prompt", jinja::Value::Bool(true)},
                     {"bos_token", jinja::Value::Str(bos_token_)},
                     {"eos_token", jinja::Value::Str(eos_token_)}};
  if (renders_tools_ && tools.active()) vars["tools"] = FromJson(tools.tools);
  auto out = jinja_->Render(vars);
  if (!out.ok()) return out.status();
  // The coordinator prepends BOS as a token when the tokenizer adds it.
  if (strip_bos_ && !bos_token_.empty() && out->rfind(bos_token_, 0) == 0) {
    out->erase(0, bos_token_.size());
  }
  return out;
}

}  // namespace latentkv::coordinator::http
