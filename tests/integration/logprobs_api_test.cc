// Log-probabilities through the whole stack: gRPC Generate with
// SamplingParams.logprobs on one mixed worker and on a prefill + decode
// pair (the first token's come from the prefill worker across the
// transfer), and the OpenAI shapes over HTTP, streamed and not.
// Independent expectations: a greedy token is its position's most likely
// (top[0]), the tokens' bytes concatenate to the text the detokenizer
// produced, and both topologies report the same numbers.
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

struct Streamed {
  std::vector<int32_t> tokens;
  std::vector<pb::TokenLogprobs> logprobs;
  std::string text;
};

Streamed Stream(Cluster& c, const std::string& prompt, int max_tokens,
                int top) {
  pb::GenerateRequest req = Greedy(prompt, max_tokens);
  req.mutable_sampling()->set_logprobs(top);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  auto reader = c.stub().Generate(&ctx, req);
  Streamed s;
  pb::GenerateResponse msg;
  while (reader->Read(&msg)) {
    EXPECT_EQ(msg.logprobs_size(), msg.token_ids_size());
    s.tokens.insert(s.tokens.end(), msg.token_ids().begin(),
                    msg.token_ids().end());
    s.logprobs.insert(s.logprobs.end(), msg.logprobs().begin(),
                      msg.logprobs().end());
    s.text += msg.text();
  }
  const grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  return s;
}

void ExpectGreedyAndConsistent(const Streamed& s, int top) {
  std::string bytes;
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    const pb::TokenLogprobs& t = s.logprobs[i];
    ASSERT_EQ(t.top_size(), top) << i;
    EXPECT_EQ(t.top(0).token_id(), s.tokens[i]) << i;
    EXPECT_FLOAT_EQ(t.top(0).logprob(), t.logprob()) << i;
    EXPECT_EQ(t.top(0).token(), t.token()) << i;
    EXPECT_LE(t.logprob(), 0.0f);
    for (int k = 1; k < top; ++k) {
      EXPECT_LE(t.top(k).logprob(), t.top(k - 1).logprob()) << i;
    }
    bytes += t.token();
  }
  EXPECT_EQ(bytes, s.text);
}

TEST(LogprobsApiTest, GrpcMixedAndDisaggregatedAgree) {
  const std::string prompt = "Once upon a time, there was a little";
  Streamed mixed;
  {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    Cluster c(o);
    mixed = Stream(c, prompt, 12, 4);
  }
  ASSERT_EQ(mixed.tokens.size(), 12u);
  ExpectGreedyAndConsistent(mixed, 4);
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.workers = 2;
  o.per_worker_args = {{"--role=prefill"}, {"--role=decode"}};
  Cluster c(o);
  const Streamed split = Stream(c, prompt, 12, 4);
  ASSERT_EQ(split.tokens, mixed.tokens);
  ExpectGreedyAndConsistent(split, 4);
  for (size_t i = 0; i < split.tokens.size(); ++i) {
    EXPECT_NEAR(split.logprobs[i].logprob(), mixed.logprobs[i].logprob(), 1e-4)
        << i;
    for (int k = 0; k < 4; ++k) {
      EXPECT_NEAR(split.logprobs[i].top(k).logprob(),
                  mixed.logprobs[i].top(k).logprob(), 1e-4);
    }
  }
  EXPECT_EQ(c.WorkerStats(1).kv_transfers(), 1u);
  // Out of range: 400-style INVALID_ARGUMENT from the coordinator.
  pb::GenerateRequest bad = Greedy(prompt, 2);
  bad.mutable_sampling()->set_logprobs(21);
  grpc::ClientContext ctx;
  auto reader = c.stub().Generate(&ctx, bad);
  pb::GenerateResponse msg;
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(LogprobsApiTest, OpenAiShapesStreamedAndNot) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.http = true;
  Cluster c(o);
  // Completions: parallel arrays whose tokens spell the text.
  HttpResult r = Curl(c.http_port(), "/v1/completions",
                      R"({"prompt":"Once upon a time","max_tokens":6,)"
                      R"("temperature":0,"ignore_eos":true,"logprobs":2})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  const json& lp = j["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 6u) << lp;
  std::string spelled;
  size_t offset = 0;
  for (size_t i = 0; i < 6; ++i) {
    const std::string tok = lp["tokens"][i];
    EXPECT_EQ(lp["text_offset"][i], offset);
    offset += tok.size();
    spelled += tok;
    ASSERT_EQ(lp["top_logprobs"][i].size(), 2u);
    EXPECT_DOUBLE_EQ(lp["top_logprobs"][i][tok].get<double>(),
                     lp["token_logprobs"][i].get<double>());
  }
  EXPECT_EQ(spelled, j["choices"][0]["text"]);
  // Chat, streamed: one content entry per generated token across chunks.
  r = Curl(c.http_port(), "/v1/chat/completions",
           R"({"messages":[{"role":"user","content":"Tell a story"}],)"
           R"("max_tokens":5,"ignore_eos":true,"logprobs":true,)"
           R"("top_logprobs":3,"stream":true,)"
           R"("stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200) << r.body;
  size_t entries = 0, completion_tokens = 0;
  size_t at = 0;
  while ((at = r.body.find("data: {", at)) != std::string::npos) {
    const size_t end = r.body.find("\n\n", at);
    const json chunk = json::parse(r.body.substr(at + 6, end - at - 6));
    at = end;
    if (chunk.contains("usage") && chunk["usage"].is_object()) {
      completion_tokens = chunk["usage"]["completion_tokens"];
    }
    if (chunk["choices"].empty()) continue;
    const json& l = chunk["choices"][0]["logprobs"];
    if (l.is_null()) continue;
    for (const json& e : l["content"]) {
      EXPECT_EQ(e["top_logprobs"].size(), 3u);
      std::string from_bytes;
      for (const json& b : e["bytes"]) {
        from_bytes.push_back(static_cast<char>(b.get<int>()));
      }
      EXPECT_FALSE(from_bytes.empty());
      ++entries;
    }
  }
  EXPECT_EQ(completion_tokens, 5u);
  EXPECT_EQ(entries, 5u);
  // top_logprobs without logprobs: 400.
  r = Curl(c.http_port(), "/v1/chat/completions",
           R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})");
  EXPECT_EQ(r.status, 400) << r.body;
}

// echo with logprobs: the prompt's tokens' log-probabilities, computed in
// one prefill, equal those the same tokens had when decoded one at a time.
TEST(LogprobsApiTest, EchoedPromptLogprobsEqualDecodedOnes) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.http = true;
  Cluster c(o);
  HttpResult r = Curl(c.http_port(), "/v1/completions",
                      R"({"prompt":"Once upon a time","max_tokens":5,)"
                      R"("temperature":0,"ignore_eos":true,"logprobs":1,)"
                      R"("return_token_ids":true})");
  ASSERT_EQ(r.status, 200) << r.body;
  const json gen = json::parse(r.body)["choices"][0];
  pb::TokenizeRequest treq;
  treq.set_text("Once upon a time");
  treq.set_add_bos(true);
  pb::TokenizeResponse tresp;
  grpc::ClientContext tctx;
  ASSERT_TRUE(c.stub().Tokenize(&tctx, treq, &tresp).ok());
  std::vector<int32_t> ids(tresp.token_ids().begin(), tresp.token_ids().end());
  const size_t prompt_len = ids.size();
  for (const json& t : gen["token_ids"]) ids.push_back(t.get<int32_t>());
  json echo_req = {{"prompt", ids}, {"max_tokens", 1}, {"temperature", 0},
                   {"logprobs", 1}, {"echo", true},    {"ignore_eos", true}};
  r = Curl(c.http_port(), "/v1/completions", echo_req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json echo = json::parse(r.body)["choices"][0];
  const json& lp = echo["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), ids.size() + 1) << lp;
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(lp["token_logprobs"][prompt_len + i].get<double>(),
                gen["logprobs"]["token_logprobs"][i].get<double>(), 1e-3)
        << i;
  }
  // The text starts with the prompt's (detokenized ids here).
  const std::string text = echo["text"];
  EXPECT_EQ(text.rfind("Once upon a time" + gen["text"].get<std::string>(), 0),
            0u)
      << text;
  // Without logprobs echo gives the text only.
  r = Curl(c.http_port(), "/v1/completions",
           R"({"prompt":"Once upon a time","max_tokens":2,"echo":true})");
  ASSERT_EQ(r.status, 200) << r.body;
  const json plain = json::parse(r.body)["choices"][0];
  EXPECT_EQ(plain["text"].get<std::string>().rfind("Once upon a time", 0), 0u);
  EXPECT_TRUE(plain["logprobs"].is_null());
}

}  // namespace
}  // namespace latentkv::testing
