#include "coordinator/http/chat_template.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "coordinator/http/mini_jinja.h"
#include "gtest/gtest.h"
#include "model/tokenizer/builtin_chat_templates.h"

namespace latentkv::coordinator::http {
namespace {

using ::latentkv::model::BuiltinChatTemplate;

const std::vector<ChatMessage> kChat = {
    {"system", "S"}, {"user", "Hi"}, {"assistant", "Yo"}, {"user", "Again"}};

std::string RenderOrDie(const std::string& tmpl,
                        const std::vector<ChatMessage>& msgs = kChat) {
  auto t = ChatTemplate::FromJinja(tmpl, "<s>", "</s>");
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return "";
  auto out = t->Render(msgs);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.value_or("");
}

TEST(ChatTemplateTest, DefaultTemplate) {
  ChatTemplate t;
  EXPECT_EQ(t.origin(), "default");
  EXPECT_EQ(*t.Render({{"system", "Be brief."}, {"user", "Hi"}}),
            "system: Be brief.\nuser: Hi\nassistant:");
}

// Gemma 3's built-in template (GGUF files without one): the system message
// joins the first user turn, "assistant" becomes "model", content is
// trimmed, and the tokenizer's own BOS is not doubled. Expected text written
// from Google's template by hand.
TEST(ChatTemplateTest, BuiltinGemma3) {
  ASSERT_FALSE(BuiltinChatTemplate("llama").has_value());
  const std::optional<std::string> src = BuiltinChatTemplate("gemma3");
  ASSERT_TRUE(src.has_value());
  auto t = ChatTemplate::FromJinja(*src, "<bos>", "<eos>",
                                   /*tokenizer_adds_bos=*/true, "builtin");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->Render({{"system", "Be brief."},
                        {"user", " Hi "},
                        {"assistant", "Hello."},
                        {"user", "Capital of France?"}}),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
            "<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\nCapital of France?<end_of_turn>\n"
            "<start_of_turn>model\n");
  EXPECT_EQ(*t->Render({{"user", "Hi"}}),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  // Roles must alternate.
  EXPECT_EQ(t->Render({{"user", "a"}, {"user", "b"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, ChatMl) {
  EXPECT_EQ(
      RenderOrDie(
          "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
          "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% "
          "if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% "
          "endif %}",
          {{"user", "Hi"}}),
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

// transformers' Llama 2 chat template, verbatim.
constexpr char kLlama2[] =
    R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})";

TEST(ChatTemplateTest, Llama2DropsTheLeadingBos) {
  EXPECT_EQ(RenderOrDie(kLlama2),
            "[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST] Yo </s><s>[INST] "
            "Again [/INST]");
  auto t = ChatTemplate::FromJinja(kLlama2, "<s>", "</s>");
  ASSERT_TRUE(t.ok());
  auto bad = t->Render({{"user", "a"}, {"user", "b"}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("must alternate"), std::string::npos);
}

TEST(ChatTemplateTest, Llama3FilterPrecedence) {
  EXPECT_EQ(
      RenderOrDie(
          "{% set loop_messages = messages %}{% for message in loop_messages "
          "%}{% set content = '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = "
          "bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if "
          "add_generation_prompt %}{{ "
          "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif "
          "%}",
          {{"user", "  Hi \n"}}),
      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, TrimBlocksAndLstripBlocks) {
  const std::string tmpl =
      "{% for m in messages %}\n"
      "  {% if m.role == 'user' %}\n"
      "U: {{ m.content }}\n"
      "  {% else %}\n"
      "A: {{ m.content }}\n"
      "  {% endif %}\n"
      "{% endfor %}\n"
      "{#- a comment #}\n"
      "{%- if add_generation_prompt %}A:{% endif %}";
  EXPECT_EQ(RenderOrDie(tmpl, {{"user", "hi"}, {"assistant", "yo"}}),
            "U: hi\nA: yo\nA:");
}

TEST(ChatTemplateTest, ExpressionsFiltersAndNamespaces) {
  auto render = [](const std::string& src) {
    auto t = jinja::MiniJinjaTemplate::Parse(src);
    EXPECT_TRUE(t.ok()) << src << ": " << t.status();
    if (!t.ok()) return std::string();
    jinja::Map vars = {
        {"messages",
         jinja::Value::Of(jinja::List{
             jinja::Value::Of(jinja::Map{{"role", jinja::Value::Str("system")},
                                         {"content", jinja::Value::Str("s")}}),
             jinja::Value::Of(jinja::Map{{"role", jinja::Value::Str("user")},
                                         {"content", jinja::Value::Str("u")}}),
         })}};
    auto out = (*t)->Render(vars);
    EXPECT_TRUE(out.ok()) << src << ": " << out.status();
    return out.value_or("");
  };
  EXPECT_EQ(render("{% set ns = namespace(found=false) %}{% for m in messages "
                   "%}{% if m.role == 'system' %}{% set ns.found = true %}{% "
                   "endif %}{% endfor %}{{ ns.found }}"),
            "True");
  EXPECT_EQ(render("{{ messages[-1].content }}{{ messages|length }}"), "u2");
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 % 3 }} {{ 1 + 2 * 3 }} {{ 7 / 2 }}"),
            "3 2 7 3.5");
  EXPECT_EQ(render("{{ [1, 2, 3]|join('-') }} {{ {'a': 1}|tojson }}"),
            "1-2-3 {\"a\":1}");
  EXPECT_EQ(render("{{ 'x' in 'xyz' }} {{ 'q' not in ['a'] }} {{ none is "
                   "none }} {{ undefined_thing is defined }}"),
            "True True True False");
  EXPECT_EQ(render("{{ 'yes' if messages else 'no' }}{{ missing|default('d') "
                   "}}{{ ' A b '.strip().upper() }}"),
            "yesdA B");
  EXPECT_EQ(render("{% for m in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}|items %}{{ k }}={{ v "
                   "}}{% if not loop.last %},{% endif %}{% endfor %}"),
            "a=1,b=2");
  EXPECT_EQ(render("{{ messages[1:]|length }}{{ 'abc'[:2] }}{{ 'x' ~ 1 }}"),
            "1abx1");
}

// A namespace set to hold itself, directly or through a list or another
// namespace, is refused (the shared_ptr cycle leaked every render).
TEST(ChatTemplateTest, NamespaceCannotHoldItself) {
  for (const char* src :
       {"{% set ns = namespace(a=1) %}{% set ns.a = ns %}",
        "{% set ns = namespace(a=1) %}{% set ns.a = [1, ns] %}",
        "{% set a = namespace(x=1) %}{% set b = namespace(y=a) %}"
        "{% set a.x = b %}"}) {
    auto t = ChatTemplate::FromJinja(src, "<s>", "</s>");
    ASSERT_TRUE(t.ok()) << src;
    EXPECT_EQ(t->Render(kChat).status().code(),
              absl::StatusCode::kInvalidArgument)
        << src;
  }
  EXPECT_EQ(RenderOrDie("{% set a = namespace(x=1) %}{% set b = "
                        "namespace(y=a) %}{% set b.y = a.x + 1 %}{{ b.y }}"),
            "2");
}

// tojson of bytes that are not UTF-8 replaces them (it threw).
TEST(ChatTemplateTest, ToJsonOfInvalidUtf8) {
  EXPECT_EQ(RenderOrDie("{{ 'a\xff' | tojson }}"), "\"a\xef\xbf\xbd\"");
}

// Nesting beyond 64 levels is refused at parse time (800 nested '['
// overflowed the recursive parser's stack).
TEST(ChatTemplateTest, DeepNestingFailsToParse) {
  const std::string brackets =
      "{{ " + std::string(1000, '[') + std::string(1000, ']') + " }}";
  std::string ifs;
  for (int i = 0; i < 100; ++i) ifs += "{% if true %}";
  for (int i = 0; i < 100; ++i) ifs += "{% endif %}";
  for (const std::string& src :
       {brackets, ifs,
        "{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}",
        "{{ " + std::string(300, '-') + "1 }}"}) {
    EXPECT_EQ(jinja::MiniJinjaTemplate::Parse(src).status().code(),
              absl::StatusCode::kInvalidArgument)
        << src.substr(0, 20);
  }
  EXPECT_EQ(RenderOrDie("{{ [[[1]]][0][0][0] }}{% if true %}{% if 1 %}x"
                        "{% endif %}{% endif %}"),
            "1x");
}

// Integer overflow is a template error (it was undefined behaviour); int of
// a float outside int64 gives 0.
TEST(ChatTemplateTest, IntegerOverflowIsAnError) {
  for (const char* src :
       {"{{ 9223372036854775807 + 1 }}", "{{ -9223372036854775807 - 2 }}",
        "{{ 4611686018427387904 * 2 }}",
        "{{ (-9223372036854775807 - 1) // -1 }}",
        "{{ -(-9223372036854775807 - 1) }}"}) {
    auto t = ChatTemplate::FromJinja(src, "<s>", "</s>");
    ASSERT_TRUE(t.ok()) << src;
    EXPECT_EQ(t->Render(kChat).status().code(),
              absl::StatusCode::kInvalidArgument)
        << src;
  }
  EXPECT_EQ(
      RenderOrDie(
          "{{ 99999999999999999999.0 | int }} {{ 7 // -2 }} {{ -7 % 3 }}"),
      "0 -4 2");
}

// Nested loops over the messages multiply: a template needing more than
// kMaxRenderSteps is an error, quickly, not a thread held for seconds (the
// input fuzz_chat_template found nests seven loops).
TEST(ChatTemplateTest, RenderingIsBounded) {
  std::string nested;
  for (int d = 0; d < 6; ++d) nested += "{% for m in messages %}";
  nested += "x";
  for (int d = 0; d < 6; ++d) nested += "{% endfor %}";
  auto t = ChatTemplate::FromJinja(nested, "<s>", "</s>");
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<ChatMessage> msgs(20, ChatMessage{"user", "hi"});  // 20^6 = 6.4e7
  const auto start = std::chrono::steady_clock::now();
  auto r = t->Render(msgs);
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("steps"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  // Output is bounded too: a loop doubling a string.
  auto big = ChatTemplate::FromJinja(
      "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}"
      "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}{{ ns.s }}",
      "<s>", "</s>");
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_FALSE(big->Render(msgs).ok());
  // Two messages through two nested loops are fine.
  EXPECT_TRUE(t->Render({{"user", "a"}}).ok());
}

TEST(ChatTemplateTest, OutsideTheSubsetFailsToParse) {
  for (const char* src :
       {"{% macro m() %}x{% endmacro %}", "{{ x", "{% if x %}no end",
        "{% for x in y %}", "{{ 1 + }}", "{% include 'a' %}"}) {
    EXPECT_EQ(jinja::MiniJinjaTemplate::Parse(src).status().code(),
              absl::StatusCode::kInvalidArgument)
        << src;
  }
}

TEST(ChatTemplateTest, FromModelDir) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("chat_template_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto t = ChatTemplate::FromModelDir(dir.string());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->origin(), "default");
  {
    std::ofstream out(dir / "tokenizer_config.json");
    out << R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>",
               "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}"})";
  }
  t = ChatTemplate::FromModelDir(dir.string());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->origin(), "tokenizer_config.json");
  EXPECT_EQ(*t->Render({{"user", "Hi"}}), "[user] Hi</s>");
  {
    std::ofstream out(dir / "tokenizer_config.json");
    out << R"({"chat_template": "{% macro %}"})";
  }
  EXPECT_FALSE(ChatTemplate::FromModelDir(dir.string()).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace latentkv::coordinator::http
