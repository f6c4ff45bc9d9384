// Structured output through the whole stack (coordinator, worker, llguidance
// over stories260K's vocabulary): the OpenAI fields over HTTP, streamed and
// not; SamplingParams.structured_output over gRPC on one mixed worker and on
// a prefill + decode pair (the first token is drawn under the constraint on
// the prefill worker and checked by the decode worker); and the errors.
// Independent expectations: the text matches the regex / parses as JSON of
// the schema's shape, and both topologies give the same greedy tokens.
#include <regex>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster.h"
#include "tests/integration/curl.h"
#include "tests/integration/process.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;
using json = nlohmann::json;

#ifndef LATENTKV_LLGUIDANCE_FETCHED
#define LATENTKV_LLGUIDANCE_FETCHED 0
#endif
#define SKIP_WITHOUT_LLGUIDANCE()   \
  if (!LATENTKV_LLGUIDANCE_FETCHED) \
  GTEST_SKIP() << "llguidance not fetched: no structured output"

constexpr char kRegex[] = " (Lily|Tom) (ran|sat|played)( fast)?\\.";

struct Result {
  std::vector<int32_t> tokens;
  std::string text;
  pb::FinishReason finish = pb::FINISH_REASON_UNSPECIFIED;
  grpc::Status status;
};

Result Generate(Cluster& c, const pb::GenerateRequest& req) {
  grpc::ClientContext ctx;
  auto reader = c.stub().Generate(&ctx, req);
  Result r;
  pb::GenerateResponse msg;
  while (reader->Read(&msg)) {
    r.tokens.insert(r.tokens.end(), msg.token_ids().begin(),
                    msg.token_ids().end());
    r.text += msg.text();
    if (msg.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
      r.finish = msg.finish_reason();
    }
  }
  r.status = reader->Finish();
  return r;
}

pb::GenerateRequest RegexRequest() {
  pb::GenerateRequest req = Greedy("Once upon a time", 40);
  req.mutable_sampling()->mutable_structured_output()->set_regex(kRegex);
  return req;
}

TEST(StructuredOutputTest, GrpcMixedAndDisaggregatedAgree) {
  SKIP_WITHOUT_LLGUIDANCE();
  Result mixed;
  {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    Cluster c(o);
    mixed = Generate(c, RegexRequest());
  }
  ASSERT_TRUE(mixed.status.ok()) << mixed.status.error_message();
  EXPECT_TRUE(std::regex_match(mixed.text, std::regex(kRegex))) << mixed.text;
  EXPECT_EQ(mixed.finish, pb::FINISH_REASON_STOP);
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.per_worker_args = {{"--role=prefill"}, {"--role=decode"}};
  Cluster c(o);
  const Result split = Generate(c, RegexRequest());
  ASSERT_TRUE(split.status.ok()) << split.status.error_message();
  EXPECT_EQ(split.tokens, mixed.tokens);
  EXPECT_EQ(split.text, mixed.text);
  EXPECT_EQ(c.WorkerStats(1).kv_transfers(), 1u);
  // A grammar that does not compile: INVALID_ARGUMENT, from the worker
  // (prefill or decode alike).
  pb::GenerateRequest bad = Greedy("Once", 4);
  bad.mutable_sampling()->mutable_structured_output()->set_lark("start: nope");
  const Result b = Generate(c, bad);
  EXPECT_EQ(b.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(b.status.error_message().find("does not compile"),
            std::string::npos)
      << b.status.error_message();
}

std::string StreamedContent(const std::string& body, std::string* finish) {
  std::string content;
  size_t at = 0;
  while ((at = body.find("data: {", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    const json chunk = json::parse(body.substr(at + 6, end - at - 6));
    at = end;
    if (chunk["choices"].empty()) continue;
    const json& ch = chunk["choices"][0];
    if (ch["delta"].contains("content") && ch["delta"]["content"].is_string()) {
      content += ch["delta"]["content"].get<std::string>();
    }
    if (ch["finish_reason"].is_string()) *finish = ch["finish_reason"];
  }
  return content;
}

TEST(StructuredOutputTest, OpenAiFieldsOverHttp) {
  SKIP_WITHOUT_LLGUIDANCE();
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.http = true;
  Cluster c(o);
  // Completions with vLLM's guided_regex, sampled.
  json req = {{"prompt", "Once upon a time"},
              {"max_tokens", 40},
              {"temperature", 1.0},
              {"seed", 3},
              {"guided_regex", kRegex}};
  HttpResult r = Curl(c.http_port(), "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  const std::string text = j["choices"][0]["text"];
  EXPECT_TRUE(std::regex_match(text, std::regex(kRegex))) << text;
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  // Chat, streamed, with an OpenAI json_schema response_format.
  const json schema = {{"type", "object"},
                       {"properties",
                        {{"name", {{"type", "string"}, {"maxLength", 10}}},
                         {"happy", {{"type", "boolean"}}}}},
                       {"required", {"name", "happy"}},
                       {"additionalProperties", false}};
  req = {{"messages", {{{"role", "user"}, {"content", "Tell a story"}}}},
         {"max_tokens", 200},
         {"stream", true},
         {"temperature", 0},
         {"response_format",
          {{"type", "json_schema"},
           {"json_schema",
            {{"name", "story"}, {"strict", true}, {"schema", schema}}}}}};
  r = Curl(c.http_port(), "/v1/chat/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  std::string finish;
  const std::string content = StreamedContent(r.body, &finish);
  const json parsed = json::parse(content, nullptr, false);
  ASSERT_TRUE(parsed.is_object()) << content;
  EXPECT_EQ(parsed.size(), 2u) << content;
  EXPECT_TRUE(parsed["name"].is_string()) << content;
  EXPECT_TRUE(parsed["happy"].is_boolean()) << content;
  EXPECT_EQ(finish, "stop");
  // guided_choice: one of them, exactly.
  req = {{"prompt", "Once upon a time there was a"},
         {"max_tokens", 40},
         {"temperature", 0},
         {"guided_choice", {"dog", "cat", "little girl"}}};
  r = Curl(c.http_port(), "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string choice = json::parse(r.body)["choices"][0]["text"];
  EXPECT_TRUE(choice == "dog" || choice == "cat" || choice == "little girl")
      << choice;
  // Errors: a regex that does not compile, a spec over 256 KiB, both 400.
  r = Curl(c.http_port(), "/v1/completions",
           R"({"prompt":"x","max_tokens":3,"guided_regex":"(unclosed"})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("does not compile"), std::string::npos) << r.body;
  req = {{"prompt", "x"},
         {"max_tokens", 3},
         {"guided_regex", std::string(300 << 10, 'a')}};
  r = Curl(c.http_port(), "/v1/completions", req.dump());
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("at most 262144"), std::string::npos) << r.body;
  // The server still serves.
  r = Curl(c.http_port(), "/v1/completions",
           R"({"prompt":"Once","max_tokens":2,"temperature":0})");
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST(StructuredOutputTest, WorkerWithoutItSays400) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.http = true;
  o.worker_args = {"--structured_output=off"};
  Cluster c(o);
  HttpResult r =
      Curl(c.http_port(), "/v1/completions",
           R"({"prompt":"x","max_tokens":3,"guided_regex":"[0-9]+"})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("not available"), std::string::npos) << r.body;
}

}  // namespace
}  // namespace latentkv::testing
