// The structured-output fields of the OpenAI API (structured_output_json.h)
// through ParseRequest: what reaches SamplingParams.structured_output, and
// the 400s.
#include "coordinator/http/structured_output_json.h"

#include "coordinator/http/openai_api.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {
namespace {

namespace pb = ::latentkv::v1;

pb::StructuredOutput Parse(Endpoint ep, const std::string& body) {
  ParsedRequest p;
  auto err = ParseRequest(ep, body, &p);
  EXPECT_FALSE(err.has_value()) << body << ": " << (err ? err->message : "");
  return p.generate.sampling().structured_output();
}

ApiError Fail(Endpoint ep, const std::string& body) {
  ParsedRequest p;
  auto err = ParseRequest(ep, body, &p);
  EXPECT_TRUE(err.has_value()) << body;
  return err.value_or(ApiError());
}

constexpr char kChat[] = R"({"messages":[{"role":"user","content":"x"}],)";

TEST(StructuredOutputJsonTest, ResponseFormats) {
  pb::StructuredOutput so =
      Parse(Endpoint::kChat,
            std::string(kChat) + R"("response_format":{"type":"text"}})");
  EXPECT_EQ(so.kind_case(), pb::StructuredOutput::KIND_NOT_SET);
  so = Parse(
      Endpoint::kChat,
      std::string(kChat) + R"("response_format":{"type":"json_object"}})");
  EXPECT_TRUE(so.json_object());
  // The schema keeps its key order: "properties" order is output order.
  so = Parse(Endpoint::kChat,
             std::string(kChat) +
                 R"("response_format":{"type":"json_schema","json_schema":)"
                 R"({"name":"p","strict":true,"schema":{"type":"object",)"
                 R"("properties":{"zeta":{"type":"string"},"alpha":)"
                 R"({"type":"integer"}},"required":["zeta","alpha"]}}}})");
  ASSERT_EQ(so.kind_case(), pb::StructuredOutput::kJsonSchema);
  EXPECT_LT(so.json_schema().find("zeta"), so.json_schema().find("alpha"))
      << so.json_schema();
  EXPECT_EQ(nlohmann::json::parse(so.json_schema())["required"][1], "alpha");
  // Completions take response_format too.
  so = Parse(Endpoint::kCompletions,
             R"({"prompt":"x","response_format":{"type":"json_object"}})");
  EXPECT_TRUE(so.json_object());
}

TEST(StructuredOutputJsonTest, VllmExtensions) {
  pb::StructuredOutput so = Parse(Endpoint::kCompletions,
                                  R"({"prompt":"x","guided_regex":"[0-9]+"})");
  EXPECT_EQ(so.regex(), "[0-9]+");
  so = Parse(Endpoint::kCompletions,
             R"j({"prompt":"x","guided_choice":["a.b","c|d","(e)"]})j");
  EXPECT_EQ(so.regex(), R"j((?:a\.b|c\|d|\(e\)))j");
  so = Parse(Endpoint::kCompletions,
             R"({"prompt":"x","guided_json":{"type":"array"}})");
  EXPECT_EQ(so.json_schema(), R"({"type":"array"})");
  so = Parse(Endpoint::kCompletions,
             R"({"prompt":"x","guided_json":"{\"type\": \"string\"}"})");
  EXPECT_EQ(so.json_schema(), R"({"type": "string"})");
  so = Parse(Endpoint::kCompletions,
             R"({"prompt":"x","guided_grammar":"start: \"a\"+"})");
  EXPECT_EQ(so.lark(), "start: \"a\"+");
  so = Parse(Endpoint::kChat,
             std::string(kChat) + R"("structured_outputs":{"choice":["y"]}})");
  EXPECT_EQ(so.regex(), "(?:y)");
  so = Parse(
      Endpoint::kChat,
      std::string(kChat) + R"("structured_outputs":{"json_object":true}})");
  EXPECT_TRUE(so.json_object());
}

TEST(StructuredOutputJsonTest, MalformedOrConflictingAre400) {
  for (const std::string& tail : {
           std::string(R"("response_format":{"type":"grammar"}})"),
           std::string(R"("response_format":"json_object"})"),
           std::string(R"("response_format":{"type":"json_schema"}})"),
           std::string(
               R"("response_format":{"type":"json_schema","json_schema":{}}})"),
           std::string(R"("response_format":{"type":"json_schema",)"
                       R"("json_schema":{"schema":{},"strict":"yes"}}})"),
           std::string(R"("guided_json":"not json"})"),
           std::string(R"("guided_json":[1]})"),
           std::string(R"("guided_regex":""})"),
           std::string(R"("guided_regex":5})"),
           std::string(R"("guided_choice":[]})"),
           std::string(R"("guided_choice":["a",1]})"),
           std::string(R"("structured_outputs":{"xml":"x"}})"),
           std::string(R"("structured_outputs":[]})"),
           std::string(R"("guided_regex":"a","guided_choice":["a"]})"),
           std::string(R"("response_format":{"type":"json_object"},)"
                       R"("guided_regex":"a"})"),
       }) {
    ApiError e = Fail(Endpoint::kChat, std::string(kChat) + tail);
    EXPECT_EQ(e.http_status, 400) << tail;
    EXPECT_FALSE(e.message.empty());
  }
}

}  // namespace
}  // namespace latentkv::coordinator::http
