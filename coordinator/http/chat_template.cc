#include "coordinator/http/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "coordinator/http/mini_jinja.h"
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
    const std::vector<ChatMessage>& messages) const {
  if (jinja_ == nullptr) {
    std::string out;
    for (const ChatMessage& m : messages) {
      absl::StrAppend(&out, m.role, ": ", m.content, "\n");
    }
    return out + "assistant:";
  }
  jinja::List list;
  for (const ChatMessage& m : messages) {
    list.push_back(jinja::Value::Of(
        jinja::Map{{"role", jinja::Value::Str(m.role)},
                   {"content", jinja::Value::Str(m.content)}}));
  }
  jinja::Map vars = {{"messages", jinja::Value::Of(std::move(list))},
                     {"add_generation_prompt", jinja::Value::Bool(true)},
                     {"bos_token", jinja::Value::Str(bos_token_)},
                     {"eos_token", jinja::Value::Str(eos_token_)}};
  auto out = jinja_->Render(vars);
  if (!out.ok()) return out.status();
  // The coordinator prepends BOS as a token when the tokenizer adds it.
  if (strip_bos_ && !bos_token_.empty() && out->rfind(bos_token_, 0) == 0) {
    out->erase(0, bos_token_.size());
  }
  return out;
}

}  // namespace latentkv::coordinator::http
