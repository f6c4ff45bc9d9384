#include "coordinator/http/tool_call_parser.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {
namespace {

using json = nlohmann::json;

// What a client streaming the deltas assembles (OpenAI's SDK accumulates
// content, and per call index the name and argument fragments).
struct Assembled {
  std::string content;
  std::vector<std::string> names, args, ids;
};

Assembled Assemble(const std::vector<ToolDelta>& deltas) {
  Assembled a;
  for (const ToolDelta& d : deltas) {
    switch (d.kind) {
      case ToolDelta::Kind::kContent:
        a.content += d.text;
        break;
      case ToolDelta::Kind::kCallStart:
        EXPECT_EQ(d.call, static_cast<int>(a.names.size()));
        a.names.push_back(d.name);
        a.ids.push_back(d.id);
        a.args.emplace_back();
        break;
      case ToolDelta::Kind::kArguments:
        EXPECT_LT(d.call, static_cast<int>(a.args.size()));
        a.args[d.call] += d.text;
        break;
    }
  }
  return a;
}

// The reply fed in `step`-byte pieces.
Assembled Stream(ToolCallFormat f, const std::string& reply, size_t step) {
  ToolCallParser p(f);
  std::vector<ToolDelta> all;
  for (size_t i = 0; i < reply.size(); i += step) {
    for (ToolDelta& d : p.Feed(reply.substr(i, step))) all.push_back(d);
  }
  for (ToolDelta& d : p.Finish()) all.push_back(d);
  return Assemble(all);
}

// Every piece size gives the same result (the parser holds back exactly
// what may still change meaning).
void ExpectAllSplits(ToolCallFormat f, const std::string& reply,
                     const std::string& content,
                     const std::vector<std::string>& names,
                     const std::vector<json>& args) {
  for (size_t step = 1; step <= reply.size(); ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const Assembled a = Stream(f, reply, step);
    EXPECT_EQ(a.content, content);
    ASSERT_EQ(a.names, names);
    for (size_t i = 0; i < args.size(); ++i) {
      const json parsed = json::parse(a.args[i], nullptr, false);
      EXPECT_EQ(parsed, args[i]) << a.args[i];
    }
  }
}

TEST(ToolCallParserTest, HermesOneCall) {
  ExpectAllSplits(ToolCallFormat::kHermes,
                  "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                  "{\"city\": \"Paris\", \"days\": [1, 2]}}\n</tool_call>",
                  "", {"get_weather"},
                  {json{{"city", "Paris"}, {"days", {1, 2}}}});
}

TEST(ToolCallParserTest, HermesContentAndTwoCalls) {
  ExpectAllSplits(
      ToolCallFormat::kHermes,
      "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": "
      "\"}</tool_call>\\\"\"}}\n</tool_call>\n<tool_call>\n{\"arguments\": "
      "{}, \"name\": \"b\"}\n</tool_call>\nDone",
      "Let me check.\nDone", {"a", "b"},
      {json{{"x", "}</tool_call>\""}}, json::object()});
}

TEST(ToolCallParserTest, PlainTextIsKeptExactly) {
  const std::string text = "  Hello <tool world> <tool_ca \n\n";
  ExpectAllSplits(ToolCallFormat::kHermes, text, text, {}, {});
  ExpectAllSplits(ToolCallFormat::kLlama3Json, text, text, {}, {});
}

TEST(ToolCallParserTest, HermesBlockThatIsNotACallIsContent) {
  ExpectAllSplits(ToolCallFormat::kHermes, "<tool_call> not json</tool_call>",
                  "<tool_call> not json</tool_call>", {}, {});
  // An object without a name.
  ExpectAllSplits(ToolCallFormat::kHermes,
                  "<tool_call>{\"arguments\": {}}</tool_call> ok",
                  "<tool_call>{\"arguments\": {}}</tool_call> ok", {}, {});
}

TEST(ToolCallParserTest, ArgumentsAsAJsonStringAreDecoded) {
  ExpectAllSplits(ToolCallFormat::kHermes,
                  "<tool_call>{\"name\": \"f\", \"arguments\": "
                  "\"{\\\"a\\\": 1}\"}</tool_call>",
                  "", {"f"}, {json{{"a", 1}}});
}

TEST(ToolCallParserTest, MissingArgumentsAreAnEmptyObject) {
  ExpectAllSplits(ToolCallFormat::kHermes,
                  "<tool_call>{\"name\": \"now\"}</tool_call>", "", {"now"},
                  {json::object()});
}

TEST(ToolCallParserTest, HermesWithoutClosingTag) {
  // Ends after the object (EOS where </tool_call> would be).
  ExpectAllSplits(ToolCallFormat::kHermes,
                  "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"k\": "
                  "true}}",
                  "", {"f"}, {json{{"k", true}}});
}

TEST(ToolCallParserTest, TruncatedCallKeepsWhatWasSent) {
  // max_tokens cut the arguments: the call stays, arguments unfinished.
  const Assembled a =
      Stream(ToolCallFormat::kHermes,
             "<tool_call>{\"name\": \"f\", \"arguments\": {\"k\": \"abc", 3);
  ASSERT_EQ(a.names, std::vector<std::string>{"f"});
  EXPECT_EQ(a.args[0], "{\"k\": \"abc");
  // Cut before the name: nothing was a call; the text is content.
  const Assembled b = Stream(ToolCallFormat::kHermes, "Hi <tool_call>{\"na", 2);
  EXPECT_TRUE(b.names.empty());
  EXPECT_EQ(b.content, "Hi <tool_call>{\"na");
}

TEST(ToolCallParserTest, Llama3Json) {
  ExpectAllSplits(ToolCallFormat::kLlama3Json,
                  "{\"name\": \"get_weather\", \"parameters\": {\"city\": "
                  "\"Oslo\"}}",
                  "", {"get_weather"}, {json{{"city", "Oslo"}}});
  ExpectAllSplits(ToolCallFormat::kLlama3Json,
                  " <|python_tag|>{\"name\": \"a\", \"parameters\": {}}; "
                  "{\"name\": \"b\", \"parameters\": {\"n\": [1]}}",
                  "", {"a", "b"}, {json::object(), json{{"n", {1}}}});
}

TEST(ToolCallParserTest, Llama3JsonContentReplies) {
  ExpectAllSplits(ToolCallFormat::kLlama3Json, "The answer is {x}.",
                  "The answer is {x}.", {}, {});
  // An object that is not a call: the whole reply is content.
  ExpectAllSplits(ToolCallFormat::kLlama3Json, "{\"x\": 1} and more",
                  "{\"x\": 1} and more", {}, {});
}

// Found by fuzz_tool_calls: what the stream sends must not depend on where
// the pieces break. A call starts at its name even when its object then
// turns out malformed; only the first "name" and "arguments" count; a reply
// that is only <|python_tag|> is content.
TEST(ToolCallParserTest, StreamAgreesWithTheWholeReply) {
  ExpectAllSplits(ToolCallFormat::kHermes,
                  "<tool_call>{\"name\": \"now\", ments\": {}}</tool_call>",
                  "ments\": {}}</tool_call>", {"now"}, {json::object()});
  ExpectAllSplits(ToolCallFormat::kHermes,
                  "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}, "
                  "\"name\": \"g\", \"arguments\": {\"b\": 2}}</tool_call>",
                  "", {"f"}, {json{{"a", 1}}});
  ExpectAllSplits(ToolCallFormat::kLlama3Json, "<|python_tag|>",
                  "<|python_tag|>", {}, {});
  ExpectAllSplits(ToolCallFormat::kLlama3Json, " <|python_tag|> ",
                  " <|python_tag|> ", {}, {});
}

TEST(ToolCallParserTest, ArgumentsStreamBeforeTheCallEnds) {
  ToolCallParser p(ToolCallFormat::kHermes);
  std::vector<ToolDelta> d =
      p.Feed("<tool_call>{\"name\": \"f\", \"arguments\": {\"text\": \"lo");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].kind, ToolDelta::Kind::kCallStart);
  EXPECT_EQ(d[0].name, "f");
  EXPECT_EQ(d[0].id.rfind("call_", 0), 0u);
  EXPECT_EQ(d[0].id.size(), 29u);
  EXPECT_EQ(d[1].kind, ToolDelta::Kind::kArguments);
  EXPECT_EQ(d[1].text, "{\"text\": \"lo");
  d = p.Feed("ng\"}}\n</tool_call>");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].text, "ng\"}");
  EXPECT_TRUE(p.Finish().empty());
  EXPECT_EQ(p.calls(), 1);
}

TEST(ToolCallParserTest, ParseToolOutputShape) {
  const ToolOutput out = ParseToolOutput(
      ToolCallFormat::kHermes,
      "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>"
      "<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>");
  EXPECT_EQ(out.content, "");
  ASSERT_EQ(out.tool_calls.size(), 2u);
  EXPECT_EQ(out.tool_calls[0]["type"], "function");
  EXPECT_EQ(out.tool_calls[0]["function"]["name"], "f");
  EXPECT_EQ(out.tool_calls[0]["function"]["arguments"], "{\"a\": 1}");
  EXPECT_EQ(out.tool_calls[1]["function"]["name"], "g");
  EXPECT_NE(out.tool_calls[0]["id"], out.tool_calls[1]["id"]);
}

}  // namespace
}  // namespace latentkv::coordinator::http
