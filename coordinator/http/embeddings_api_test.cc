#include "coordinator/http/embeddings_api.h"

#include <cstring>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {
namespace {

TEST(EmbeddingsApiTest, ParsesEveryInputShape) {
  EmbeddingsBody b;
  ASSERT_FALSE(ParseEmbeddingsBody(R"({"input":"hi"})", &b).has_value());
  ASSERT_EQ(b.inputs.size(), 1u);
  EXPECT_EQ(b.inputs[0].text, "hi");
  EXPECT_FALSE(b.base64);
  ASSERT_FALSE(ParseEmbeddingsBody(
                   R"({"model":"m","input":["a","b"],"encoding_format":
                       "base64","dimensions":576,"user":"u"})",
                   &b)
                   .has_value());
  EXPECT_EQ(b.model, "m");
  EXPECT_EQ(b.inputs.size(), 2u);
  EXPECT_TRUE(b.base64);
  EXPECT_EQ(b.dimensions, 576);
  ASSERT_FALSE(ParseEmbeddingsBody(R"({"input":[1,2,3]})", &b).has_value());
  EXPECT_EQ(b.inputs[0].token_ids, (std::vector<int32_t>{1, 2, 3}));
  ASSERT_FALSE(ParseEmbeddingsBody(R"({"input":[[1],[2,3]]})", &b).has_value());
  EXPECT_EQ(b.inputs.size(), 2u);
}

TEST(EmbeddingsApiTest, RefusesBadBodies) {
  std::string many = R"({"input":[)";
  for (int i = 0; i <= kMaxEmbeddingInputs; ++i) many += i ? ",\"x\"" : "\"x\"";
  many += "]}";
  for (const std::string& body : std::vector<std::string>{
           R"({})", R"({"input":""})", R"({"input":[]})", R"({"input":[[]]})",
           R"({"input":[-1]})", R"({"input":{}})", R"({"input":["a",3]})",
           R"({"input":"a","encoding_format":"int8"})",
           R"({"input":"a","dimensions":"8"})", R"({"input":"a","extra":1})",
           many}) {
    EmbeddingsBody b;
    const auto e = ParseEmbeddingsBody(body, &b);
    ASSERT_TRUE(e.has_value()) << body;
    EXPECT_EQ(e->http_status, 400);
    EXPECT_FALSE(e->param.empty()) << body;
  }
}

TEST(EmbeddingsApiTest, FloatAndBase64Responses) {
  const std::vector<std::vector<float>> v = {{0.5f, -0.25f}, {1.0f, 0.0f}};
  const auto j = nlohmann::json::parse(EmbeddingsJson("m", v, 7, false));
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 7);
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][1]["index"], 1);
  EXPECT_EQ(j["data"][0]["embedding"], nlohmann::json({0.5, -0.25}));
  // base64 of little-endian float32: 0.5 is 00 00 00 3f, -0.25 00 00 80 be.
  const auto b = nlohmann::json::parse(EmbeddingsJson("m", v, 7, true));
  EXPECT_EQ(b["data"][0]["embedding"], "AAAAPwAAgL4=");
}

}  // namespace
}  // namespace latentkv::coordinator::http
