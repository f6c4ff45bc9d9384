// Turns chat messages into the prompt text the coordinator tokenizes.
//
// A model directory whose tokenizer_config.json has a string "chat_template"
// gets that template, rendered by the Jinja subset of mini_jinja.h with the
// variables Hugging Face templates expect: messages (role, content),
// add_generation_prompt (true), bos_token and eos_token (from the same file,
// "" when absent) and raise_exception(msg). When the model's tokenizer adds
// BOS as a token itself (`tokenizer_adds_bos`), one leading bos_token text is
// dropped from the result; otherwise (ChatML models such as SmolLM2, whose
// BOS is <|im_start|>) the text stays and tokenizes as the special token.
// Otherwise (no file, no template) the default template applies:
//   "<role>: <content>\n" per message, then "assistant:"
// e.g. [{system, "Be brief."}, {user, "Hi"}] -> "system: Be brief.\nuser:
// Hi\nassistant:".
//
// Tools (tool_calls.h): a template that renders tools itself (its source
// mentions `tools`, as Qwen 2.5's, Hermes' and Llama 3.1's do) gets them
// as Hugging Face passes them: `tools`, a list of {"type": "function",
// "function": {...}}, and messages with `tool_calls` ({id, type,
// function: {name, arguments}}, arguments as a mapping when they are a JSON
// object), `tool_call_id` and `name`. Any other template (and the default)
// gets the messages rewritten by WithToolsInText: tools described in the
// system message, calls and results written as text.
// tool_format(): how replies write calls. Llama 3's (`<|python_tag|>` in a
// template that renders tools), otherwise Hermes'; set_tool_format
// overrides it (the coordinator's --tool_call_parser).
// Thread-safety: Render is const and thread-safe.
#ifndef LATENTKV_COORDINATOR_HTTP_CHAT_TEMPLATE_H_
#define LATENTKV_COORDINATOR_HTTP_CHAT_TEMPLATE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/http/openai_api.h"
#include "coordinator/http/tool_types.h"

namespace latentkv::coordinator::http {

namespace jinja {
class MiniJinjaTemplate;
}  // namespace jinja

class ChatTemplate {
 public:
  // The default template.
  ChatTemplate();
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&);
  ChatTemplate& operator=(ChatTemplate&&);

  // The template of `model_dir` (see above). INVALID_ARGUMENT when
  // tokenizer_config.json is unreadable JSON or its template does not parse.
  static absl::StatusOr<ChatTemplate> FromModelDir(
      const std::string& model_dir, bool tokenizer_adds_bos = true);
  // A Jinja template with the given special token texts; `origin` names
  // where it came from.
  static absl::StatusOr<ChatTemplate> FromJinja(
      const std::string& source, const std::string& bos_token,
      const std::string& eos_token, bool tokenizer_adds_bos = true,
      const std::string& origin = "tokenizer_config.json");

  // The prompt for `messages`; INVALID_ARGUMENT when the template refuses
  // them (raise_exception) or fails.
  absl::StatusOr<std::string> Render(
      const std::vector<ChatMessage>& messages,
      const ToolRequest& tools = ToolRequest()) const;
  ToolCallFormat tool_format() const { return tool_format_; }
  void set_tool_format(ToolCallFormat f) { tool_format_ = f; }
  // Whether the template renders `tools` itself.
  bool renders_tools() const { return renders_tools_; }
  // "default", "tokenizer_config.json", "gguf" or "builtin:<architecture>".
  const std::string& origin() const { return origin_; }

 private:
  std::shared_ptr<const jinja::MiniJinjaTemplate> jinja_;  // null: the default
  std::string bos_token_, eos_token_;
  bool strip_bos_ = true;
  std::string origin_ = "default";
  bool renders_tools_ = false;
  ToolCallFormat tool_format_ = ToolCallFormat::kHermes;
};

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_CHAT_TEMPLATE_H_
