#include "coordinator/http/tool_calls.h"

#include <string>
#include <vector>

#include "coordinator/http/chat_template.h"
#include "gtest/gtest.h"

namespace latentkv::coordinator::http {
namespace {

using ojson = nlohmann::ordered_json;

constexpr char kWeather[] = R"({"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type":
    "string"}, "unit": {"enum": ["C", "F"]}}, "required": ["city"]}}})";
constexpr char kNow[] = R"({"type": "function", "function": {"name": "now"}})";

ToolRequest Tools(const std::string& extra = "") {
  const ojson body = ojson::parse(std::string(R"({"tools": [)") + kWeather +
                                  "," + kNow + "]" + extra + "}");
  ToolRequest r;
  const auto e = ParseTools(body, &r);
  EXPECT_FALSE(e.has_value()) << e->message;
  return r;
}

std::optional<ApiError> Parse(const std::string& body) {
  ToolRequest r;
  return ParseTools(ojson::parse(body), &r);
}

TEST(ToolCallsTest, ParsesToolsAndChoices) {
  ToolRequest r = Tools();
  EXPECT_EQ(r.choice, ToolChoice::kAuto);
  EXPECT_TRUE(r.active());
  ASSERT_EQ(r.tools.size(), 2u);
  // Parameters keep their order (the enforced calls follow it).
  const ojson& props = r.tools[0]["function"]["parameters"]["properties"];
  EXPECT_EQ(props.begin().key(), "city");
  EXPECT_EQ(Tools(R"(, "tool_choice": "none")").choice, ToolChoice::kNone);
  EXPECT_FALSE(Tools(R"(, "tool_choice": "none")").active());
  EXPECT_EQ(Tools(R"(, "tool_choice": "required")").choice,
            ToolChoice::kRequired);
  r = Tools(R"(, "tool_choice": {"type": "function", "function":
               {"name": "now"}}, "parallel_tool_calls": false)");
  EXPECT_EQ(r.choice, ToolChoice::kNamed);
  EXPECT_EQ(r.named, "now");
  EXPECT_FALSE(r.parallel);
  // "none" and "auto" need no tools.
  EXPECT_FALSE(Parse(R"({"tool_choice": "none"})").has_value());
  EXPECT_FALSE(Parse(R"({"tool_choice": "auto"})").has_value());
}

TEST(ToolCallsTest, RefusesMalformedTools) {
  for (const char* body :
       {R"({"tools": {}})", R"({"tools": [{"type": "code_interpreter"}]})",
        R"({"tools": [{"type": "function", "function": {"name": "a b"}}]})",
        R"({"tools": [{"type": "function", "function": {"name": ""}}]})",
        R"({"tools": [{"type": "function", "function": {"name": "f",
               "parameters": []}}]})",
        R"({"tools": [{"type": "function", "function": {"name": "f",
               "x": 1}}]})",
        R"({"tools": [{"type": "function", "function": {"name": "f"}},
                         {"type": "function", "function": {"name": "f"}}]})",
        R"({"tool_choice": "required"})",
        R"({"tools": [{"type": "function", "function": {"name": "f"}}],
               "tool_choice": "always"})",
        R"({"tools": [{"type": "function", "function": {"name": "f"}}],
               "tool_choice": {"type": "function", "function":
               {"name": "g"}}})",
        R"({"parallel_tool_calls": 1})"}) {
    SCOPED_TRACE(body);
    const auto e = Parse(body);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->http_status, 400);
    EXPECT_FALSE(e->param.empty());
  }
}

TEST(ToolCallsTest, GrammarOnlyForRequiredAndNamed) {
  EXPECT_EQ(ToolCallGrammar(Tools(), ToolCallFormat::kHermes), "");
  const std::string g = ToolCallGrammar(Tools(R"(, "tool_choice": "required")"),
                                        ToolCallFormat::kHermes);
  EXPECT_EQ(g.rfind("start: call (\"\\n\" call)*\n", 0), 0u) << g;
  EXPECT_NE(g.find("\"anyOf\""), std::string::npos);
  EXPECT_NE(g.find("{\"const\":\"get_weather\"}"), std::string::npos);
  EXPECT_NE(g.find("{\"const\":\"now\"}"), std::string::npos);
  const std::string named =
      ToolCallGrammar(Tools(R"(, "tool_choice": {"type": "function", "function":
               {"name": "get_weather"}})"),
                      ToolCallFormat::kLlama3Json);
  EXPECT_EQ(named.rfind("start: call\ncall: %json ", 0), 0u) << named;
  EXPECT_EQ(named.find("\"now\""), std::string::npos);
  EXPECT_NE(named.find("\"parameters\":{\"type\":\"object\""),
            std::string::npos);
}

TEST(ToolCallsTest, ToolsInTextForTemplatesWithoutTools) {
  const ToolRequest r = Tools();
  ChatMessage call{.role = "assistant"};
  call.tool_calls = ojson::parse(
      R"([{"id": "call_1", "type": "function", "function": {"name":
          "get_weather", "arguments": "{\"city\": \"Paris\"}"}}])");
  const std::vector<ChatMessage> msgs = {
      {.role = "user", .content = "Weather?"},
      call,
      {.role = "tool", .content = "20 C", .tool_call_id = "call_1"},
      {.role = "tool", .content = "sunny", .tool_call_id = "call_1"}};
  const auto out = WithToolsInText(msgs, r, ToolCallFormat::kHermes);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].role, "system");
  EXPECT_NE(out[0].content.find("<tools>\n{\"type\":\"function\","
                                "\"function\":{\"name\":\"get_weather\""),
            std::string::npos)
      << out[0].content;
  EXPECT_EQ(out[2].role, "assistant");
  EXPECT_EQ(out[2].content,
            "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":"
            "\"Paris\"}}\n</tool_call>");
  EXPECT_EQ(out[3].role, "user");
  EXPECT_EQ(out[3].content,
            "<tool_response>\n20 C\n</tool_response>\n<tool_response>\n"
            "sunny\n</tool_response>");
  // A system message of its own keeps its text first.
  const auto with_system = WithToolsInText(
      {{.role = "system", .content = "Be brief."}, {.role = "user"}}, r,
      ToolCallFormat::kLlama3Json);
  ASSERT_EQ(with_system.size(), 2u);
  EXPECT_EQ(with_system[0].content.rfind("Be brief.\n\nYou have access", 0),
            0u);
}

// A template in Hugging Face's convention for tools (as Qwen 2.5's does:
// tools as JSON in the system turn, calls from message.tool_calls).
constexpr char kToolTemplate[] =
    "{%- if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% "
    "endfor %}</tools>\n{% endif %}{%- for m in messages %}{{ m.role }}:{% "
    "if m.tool_calls %}{% for c in m.tool_calls %}[{{ c.function.name }} "
    "{{ c.function.arguments | tojson }}]{% endfor %}{% else %}{{ m.content "
    "}}{% endif %}{% if m.tool_call_id %}({{ m.tool_call_id }}){% endif "
    "%}\n{%- endfor %}";

TEST(ToolCallsTest, TemplatesThatRenderToolsGetThem) {
  auto t = ChatTemplate::FromJinja(kToolTemplate, "", "");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->renders_tools());
  EXPECT_EQ(t->tool_format(), ToolCallFormat::kHermes);
  ChatMessage call{.role = "assistant"};
  call.tool_calls = ojson::parse(
      R"([{"id": "call_1", "type": "function", "function": {"name": "now",
          "arguments": "{\"tz\": \"UTC\"}"}}])");
  auto out = t->Render(
      {{.role = "user", .content = "Time?"},
       call,
       {.role = "tool", .content = "12:00", .tool_call_id = "call_1"}},
      Tools());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "<tools>get_weather;now;</tools>\nuser:Time?assistant:[now "
            "{\"tz\":\"UTC\"}]tool:12:00(call_1)");
  // A template without tools gets them in text.
  auto plain = ChatTemplate::FromJinja(
      "{% for m in messages %}{{ m.role }}={{ m.content }}|{% endfor %}", "",
      "");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->renders_tools());
  out = plain->Render({{.role = "user", .content = "Hi"}}, Tools());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->rfind("system=# Tools\n", 0), 0u) << *out;
  EXPECT_NE(out->find("|user=Hi|"), std::string::npos);
  // Llama 3.1's templates mark their calls with <|python_tag|>.
  auto llama = ChatTemplate::FromJinja(
      "{% if tools %}<|python_tag|>{% endif %}", "", "");
  ASSERT_TRUE(llama.ok());
  EXPECT_EQ(llama->tool_format(), ToolCallFormat::kLlama3Json);
}

}  // namespace
}  // namespace latentkv::coordinator::http
