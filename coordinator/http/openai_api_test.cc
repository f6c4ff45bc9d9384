#include "coordinator/http/openai_api.h"

#include <cmath>

#include "coordinator/http/logprobs_json.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace latentkv::coordinator::http {
namespace {

namespace pb = ::latentkv::v1;
using json = nlohmann::json;

ParsedRequest MustParse(Endpoint ep, const std::string& body) {
  ParsedRequest p;
  auto err = ParseRequest(ep, body, &p);
  EXPECT_FALSE(err.has_value()) << body << ": " << (err ? err->message : "");
  return p;
}

ApiError MustFail(Endpoint ep, const std::string& body) {
  ParsedRequest p;
  auto err = ParseRequest(ep, body, &p);
  EXPECT_TRUE(err.has_value()) << body;
  return err.value_or(ApiError());
}

TEST(OpenAiApiTest, CompletionPromptForms) {
  auto p = MustParse(Endpoint::kCompletions,
                     R"({"model":"m","prompt":"Once upon","max_tokens":7})");
  EXPECT_EQ(p.model, "m");
  EXPECT_EQ(p.generate.prompt(), "Once upon");
  EXPECT_EQ(p.generate.sampling().max_tokens(), 7u);
  EXPECT_FALSE(p.stream);
  p = MustParse(Endpoint::kCompletions, R"({"prompt":["one string"]})");
  EXPECT_EQ(p.generate.prompt(), "one string");
  EXPECT_FALSE(p.generate.sampling().has_max_tokens());
  p = MustParse(Endpoint::kCompletions, R"({"prompt":[1, 400, 9]})");
  EXPECT_EQ(p.generate.prompt_token_ids_size(), 3);
  EXPECT_EQ(p.generate.prompt_token_ids(1), 400);
  p = MustParse(Endpoint::kCompletions, R"({"prompt":[[5, 6]]})");
  EXPECT_EQ(p.generate.prompt_token_ids_size(), 2);

  // Several prompts: the first in `generate`, the rest beside it.
  p = MustParse(Endpoint::kCompletions,
                R"({"prompt":["one","two",[7,8]],"n":3})");
  EXPECT_EQ(p.generate.prompt(), "one");
  ASSERT_EQ(p.more_prompts.size(), 2u);
  EXPECT_EQ(p.more_prompts[0].text, "two");
  EXPECT_EQ(p.more_prompts[1].token_ids, (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(p.n, 3);
  p = MustParse(Endpoint::kCompletions, R"({"prompt":[[5, 6], [9]]})");
  EXPECT_EQ(p.generate.prompt_token_ids_size(), 2);
  ASSERT_EQ(p.more_prompts.size(), 1u);
  EXPECT_EQ(p.more_prompts[0].token_ids, (std::vector<int32_t>{9}));

  for (const char* bad :
       {R"({"prompt":["a",""]})", R"({"prompt":["a",3]})", R"({"prompt":""})",
        R"({"prompt":[]})", R"({"prompt":[1.5]})", R"({"prompt":{"x":1}})",
        R"({"max_tokens":3})"}) {
    ApiError e = MustFail(Endpoint::kCompletions, bad);
    EXPECT_EQ(e.http_status, 400) << bad;
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_EQ(e.param, "prompt") << bad;
  }
}

TEST(OpenAiApiTest, SamplingAndExtensions) {
  auto p = MustParse(
      Endpoint::kCompletions,
      R"({"prompt":"x","temperature":0,"top_p":0.5,"top_k":40,"seed":7,
          "stop":["\n", "The end"],"n":1,"stream":true,
          "stream_options":{"include_usage":true},"kv_cache_mode":"full",
          "ignore_eos":true,"return_token_ids":true,"user":"ignored",
          "presence_penalty":0,"logprobs":null,"echo":false})");
  const pb::SamplingParams& sp = p.generate.sampling();
  EXPECT_TRUE(sp.has_temperature());
  EXPECT_EQ(sp.temperature(), 0.0f);
  EXPECT_FLOAT_EQ(sp.top_p(), 0.5f);
  EXPECT_EQ(sp.top_k(), 40u);
  EXPECT_EQ(sp.seed(), 7u);
  ASSERT_EQ(sp.stop_size(), 2);
  EXPECT_EQ(sp.stop(1), "The end");
  EXPECT_TRUE(sp.ignore_eos());
  EXPECT_TRUE(p.stream);
  EXPECT_TRUE(p.include_usage);
  EXPECT_TRUE(p.return_token_ids);
  EXPECT_EQ(p.generate.kv_cache_mode(), pb::KV_CACHE_MODE_FULL);

  p = MustParse(Endpoint::kCompletions,
                R"({"prompt":"x","stop":"END","top_k":-1,
                    "kv_cache_mode":"compressed"})");
  EXPECT_EQ(p.generate.sampling().stop(0), "END");
  EXPECT_EQ(p.generate.sampling().top_k(), 0u);
  EXPECT_FALSE(p.generate.sampling().has_temperature());
  EXPECT_EQ(p.generate.kv_cache_mode(), pb::KV_CACHE_MODE_COMPRESSED);
}

// OpenAI's penalties and logit_bias, vLLM's repetition_penalty, min_p and
// stop_token_ids reach the request; OpenAI fields without effect on the
// output are accepted.
TEST(OpenAiApiTest, LogitControlsReachTheRequest) {
  auto p = MustParse(
      Endpoint::kCompletions,
      R"({"prompt":"x","presence_penalty":0.5,"frequency_penalty":-0.25,)"
      R"("repetition_penalty":1.3,"min_p":0.05,)"
      R"("logit_bias":{"10":-100,"7":2.5},"stop_token_ids":[2,99],)"
      R"("user":"u-1","store":false})");
  const pb::SamplingParams& sp = p.generate.sampling();
  EXPECT_FLOAT_EQ(sp.presence_penalty(), 0.5f);
  EXPECT_FLOAT_EQ(sp.frequency_penalty(), -0.25f);
  ASSERT_TRUE(sp.has_repetition_penalty());
  EXPECT_FLOAT_EQ(sp.repetition_penalty(), 1.3f);
  EXPECT_FLOAT_EQ(sp.min_p(), 0.05f);
  ASSERT_EQ(sp.logit_bias_size(), 2);
  EXPECT_FLOAT_EQ(sp.logit_bias().at(10), -100.0f);
  EXPECT_FLOAT_EQ(sp.logit_bias().at(7), 2.5f);
  ASSERT_EQ(sp.stop_token_ids_size(), 2);
  EXPECT_EQ(sp.stop_token_ids(1), 99);
  p = MustParse(Endpoint::kChat,
                R"({"messages":[{"role":"user","content":"hi"}],)"
                R"("max_completion_tokens":5,"metadata":{"a":"b"}})");
  EXPECT_FALSE(p.generate.sampling().has_repetition_penalty());
  EXPECT_FALSE(p.generate.sampling().has_seed());
}

TEST(OpenAiApiTest, LogprobsPerEndpoint) {
  // Completions: an integer count of alternatives; false or null: none.
  auto p = MustParse(Endpoint::kCompletions, R"({"prompt":"x","logprobs":3})");
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.generate.sampling().logprobs(), 3u);
  p = MustParse(Endpoint::kCompletions, R"({"prompt":"x","logprobs":0})");
  EXPECT_TRUE(p.generate.sampling().has_logprobs());
  for (const char* off :
       {R"({"prompt":"x","logprobs":false})",
        R"({"prompt":"x","logprobs":null})", R"({"prompt":"x"})"}) {
    p = MustParse(Endpoint::kCompletions, off);
    EXPECT_FALSE(p.logprobs) << off;
    EXPECT_FALSE(p.generate.sampling().has_logprobs()) << off;
  }
  // Chat: a boolean, with top_logprobs alternatives.
  const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
  p = MustParse(Endpoint::kChat,
                "{" + msgs + R"(,"logprobs":true,"top_logprobs":20})");
  EXPECT_EQ(p.generate.sampling().logprobs(), 20u);
  p = MustParse(Endpoint::kChat, "{" + msgs + R"(,"logprobs":true})");
  EXPECT_EQ(p.generate.sampling().logprobs(), 0u);
  p = MustParse(Endpoint::kChat, "{" + msgs + R"(,"logprobs":false})");
  EXPECT_FALSE(p.generate.sampling().has_logprobs());
  EXPECT_EQ(
      MustFail(Endpoint::kChat, "{" + msgs + R"(,"top_logprobs":2})").param,
      "top_logprobs");
  EXPECT_EQ(MustFail(Endpoint::kChat,
                     "{" + msgs + R"(,"logprobs":true,"top_logprobs":21})")
                .param,
            "top_logprobs");
  EXPECT_EQ(MustFail(Endpoint::kChat, "{" + msgs + R"(,"logprobs":2})").param,
            "logprobs");
  // echo (completions): with logprobs, the prompt's too.
  p = MustParse(Endpoint::kCompletions,
                R"({"prompt":"x","echo":true,"logprobs":1})");
  EXPECT_TRUE(p.echo);
  EXPECT_TRUE(p.generate.sampling().prompt_logprobs());
  p = MustParse(Endpoint::kCompletions, R"({"prompt":"x","echo":true})");
  EXPECT_TRUE(p.echo);
  EXPECT_FALSE(p.generate.sampling().prompt_logprobs());
  EXPECT_EQ(MustFail(Endpoint::kChat, "{" + msgs + R"(,"echo":true})").param,
            "echo");
}

TEST(OpenAiApiTest, LogprobsJsonShapes) {
  std::vector<pb::TokenLogprobs> lp(2);
  lp[0].set_token(" Once");
  lp[0].set_logprob(-0.5f);
  auto* a = lp[0].add_top();
  a->set_token(" Once");
  a->set_logprob(-0.5f);
  a = lp[0].add_top();
  a->set_token(" The");
  a->set_logprob(-INFINITY);
  lp[1].set_token("\xe2");  // one byte of a three-byte character
  lp[1].set_logprob(-2.0f);
  // Completions: parallel arrays; offsets count each token's bytes.
  json c = LogprobsJson(Endpoint::kCompletions, lp, 10);
  EXPECT_EQ(c["tokens"][0], " Once");
  EXPECT_DOUBLE_EQ(c["token_logprobs"][1].get<double>(), -2.0);
  EXPECT_DOUBLE_EQ(c["top_logprobs"][0][" The"].get<double>(), -9999.0);
  EXPECT_EQ(c["top_logprobs"][1], json::object());
  EXPECT_EQ(c["text_offset"], json({10, 15}));
  // No alternatives asked: top_logprobs is null.
  lp[0].clear_top();
  EXPECT_TRUE(
      LogprobsJson(Endpoint::kCompletions, lp, 0)["top_logprobs"].is_null());
  // Chat: entries with exact bytes, also for a partial character.
  json ch = LogprobsJson(Endpoint::kChat, lp, 0);
  EXPECT_EQ(ch["content"][1]["bytes"], json({0xe2}));
  EXPECT_EQ(ch["content"][0]["bytes"], json({32, 79, 110, 99, 101}));
  EXPECT_EQ(ch["content"][0]["top_logprobs"], json::array());
  EXPECT_TRUE(ch["refusal"].is_null());
  // Dumped with U+FFFD for the partial character, never an exception.
  EXPECT_NE(
      ch.dump(-1, ' ', false, json::error_handler_t::replace).find("\ufffd"),
      std::string::npos);
}

TEST(OpenAiApiTest, RefusesWhatItCannotServe) {
  struct Case {
    const char* body;
    const char* param;
  } cases[] = {
      {R"({"prompt":"x","n":129})", "n"},
      {R"({"prompt":"x","n":0})", "n"},
      {R"({"prompt":["a","b","c"],"n":50})", "n"},
      {R"({"prompt":"x","max_tokens":0})", "max_tokens"},
      {R"({"prompt":"x","max_tokens":2.5})", "max_tokens"},
      {R"({"prompt":"x","temperature":"hot"})", "temperature"},
      {R"({"prompt":"x","stream":"yes"})", "stream"},
      {R"({"prompt":"x","stop":[1]})", "stop"},
      {R"({"prompt":"x","stop":""})", "stop"},
      {R"({"prompt":"x","seed":-1})", "seed"},
      {R"({"prompt":"x","kv_cache_mode":"tiny"})", "kv_cache_mode"},
      {R"({"prompt":"x","echo":1})", "echo"},
      {R"({"prompt":"x","logprobs":21})", "logprobs"},
      {R"({"prompt":"x","logprobs":-1})", "logprobs"},
      {R"({"prompt":"x","logprobs":true})", "logprobs"},
      {R"({"prompt":"x","best_of":3})", "best_of"},
      {R"({"prompt":"x","frequency_penalty":"lots"})", "frequency_penalty"},
      {R"({"prompt":"x","logit_bias":{"ten":1}})", "logit_bias"},
      {R"({"prompt":"x","logit_bias":{"10":"up"}})", "logit_bias"},
      {R"({"prompt":"x","logit_bias":[1]})", "logit_bias"},
      {R"({"prompt":"x","stop_token_ids":[-1]})", "stop_token_ids"},
      {R"({"prompt":"x","stop_token_ids":"2"})", "stop_token_ids"},
      // Never silence: a field nobody reads is refused by name.
      {R"({"prompt":"x","guided_decoding_backend":"x"})",
       "guided_decoding_backend"},
      {R"({"prompt":"x","messages":[]})", "messages"},
      {R"({"prompt":"x","model":3})", "model"},
  };
  for (const Case& c : cases) {
    ApiError e = MustFail(Endpoint::kCompletions, c.body);
    EXPECT_EQ(e.http_status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
  }
  EXPECT_EQ(
      MustFail(Endpoint::kChat,
               R"({"messages":[{"role":"user","content":[{"type":12}]}]})")
          .http_status,
      400);
  EXPECT_EQ(MustFail(Endpoint::kChat,
                     R"({"messages":[{"role":"user","content":"x"}],)"
                     R"("response_format":{"type":7}})")
                .http_status,
            400);
  EXPECT_EQ(MustFail(Endpoint::kCompletions, "{not json").param, "");
  EXPECT_EQ(MustFail(Endpoint::kCompletions, "[1]").http_status, 400);
}

// 60,000 nested arrays (120 KB) used to kill the coordinator (recursion in
// nlohmann::json's copy of the prompt): now a 400 before any parsing.
TEST(OpenAiApiTest, DeeplyNestedBodiesAre400) {
  const std::string deep = R"({"prompt":)" + std::string(60000, '[') + "1" +
                           std::string(60000, ']') + "}";
  ApiError e = MustFail(Endpoint::kCompletions, deep);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_NE(e.message.find("deeper than 64"), std::string::npos) << e.message;
  const std::string deep_chat = R"({"messages":[{"role":"user","content":)" +
                                std::string(100, '{') + std::string(100, '}') +
                                "}]}";
  EXPECT_EQ(MustFail(Endpoint::kChat, deep_chat).http_status, 400);
}

TEST(OpenAiApiTest, NestingCountsOnlyStructureOutsideStrings) {
  EXPECT_FALSE(JsonNestingExceeds(R"({"a":[[1]]})", 3));
  EXPECT_TRUE(JsonNestingExceeds(R"({"a":[[[1]]]})", 3));
  // Brackets inside strings, escaped quotes included, do not count.
  EXPECT_FALSE(JsonNestingExceeds(R"({"a":"[[[[{{{{\"[[[["})", 1));
  EXPECT_TRUE(JsonNestingExceeds(R"({"a":"\\",[{}]})", 2));
  // Depth is nesting, not the number of arrays.
  std::string flat = "[";
  for (int i = 0; i < 1000; ++i) flat += "[1],";
  flat += "[1]]";
  EXPECT_FALSE(JsonNestingExceeds(flat, 2));
}

TEST(OpenAiApiTest, ChatMessages) {
  auto p = MustParse(Endpoint::kChat,
                     R"({"messages":[{"role":"system","content":"Be brief."},
                         {"role":"user","content":[{"type":"text","text":"Hi"},
                         {"type":"text","text":" there"}]}],
                         "max_tokens":5,"max_completion_tokens":9})");
  ASSERT_EQ(p.messages.size(), 2u);
  EXPECT_EQ(p.messages[0].role, "system");
  EXPECT_EQ(p.messages[1].content, "Hi there");
  EXPECT_EQ(p.generate.sampling().max_tokens(), 9u);  // max_completion_tokens
  EXPECT_EQ(MustFail(Endpoint::kChat, R"({"messages":[]})").param, "messages");
  EXPECT_EQ(
      MustFail(Endpoint::kChat, R"({"messages":[{"content":"x"}]})").param,
      "messages");
  // Tools are chat's; the deprecated functions are refused.
  EXPECT_EQ(
      MustFail(Endpoint::kCompletions, R"({"prompt":"x","tools":[]})").param,
      "tools");
  EXPECT_EQ(MustFail(Endpoint::kChat,
                     R"({"messages":[{"role":"user","content":"x"}],
                         "functions":[]})")
                .param,
            "functions");
}

TEST(OpenAiApiTest, ChatToolFields) {
  ParsedRequest p = MustParse(Endpoint::kChat, R"({"messages":[
      {"role":"user","content":"Weather?"},
      {"role":"assistant","content":null,"tool_calls":[{"id":"call_1",
       "type":"function","function":{"name":"w","arguments":"{}"}}]},
      {"role":"tool","tool_call_id":"call_1","content":"sunny"}],
      "tools":[{"type":"function","function":{"name":"w"}}],
      "tool_choice":"required","parallel_tool_calls":false})");
  ASSERT_EQ(p.messages.size(), 3u);
  EXPECT_EQ(p.messages[1].content, "");
  ASSERT_EQ(p.messages[1].tool_calls.size(), 1u);
  EXPECT_EQ(p.messages[1].tool_calls[0]["function"]["name"], "w");
  EXPECT_EQ(p.messages[2].tool_call_id, "call_1");
  EXPECT_EQ(p.tools.choice, ToolChoice::kRequired);
  EXPECT_FALSE(p.tools.parallel);
  // Malformed calls in history, and enforced calls beside structured
  // output, are refused.
  EXPECT_EQ(MustFail(Endpoint::kChat, R"({"messages":[{"role":"assistant",
      "tool_calls":[{"function":{"name":"w","arguments":{}}}]}]})")
                .param,
            "messages");
  EXPECT_EQ(MustFail(Endpoint::kChat, R"({"messages":[{"role":"user",
      "content":"x"}],"tools":[{"type":"function","function":{"name":"w"}}],
      "tool_choice":"required","response_format":{"type":"json_object"}})")
                .param,
            "tool_choice");
}

TEST(OpenAiApiTest, ErrorShapeAndStatusMapping) {
  ApiError e;
  e.message = "bad n";
  e.param = "n";
  const json j = json::parse(ErrorJson(e));
  ASSERT_TRUE(j.contains("error"));
  EXPECT_EQ(j["error"]["message"], "bad n");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "n");
  EXPECT_TRUE(j["error"]["code"].is_null());
  struct {
    grpc::StatusCode code;
    int http;
  } map[] = {{grpc::StatusCode::INVALID_ARGUMENT, 400},
             {grpc::StatusCode::RESOURCE_EXHAUSTED, 429},
             {grpc::StatusCode::UNAVAILABLE, 503},
             {grpc::StatusCode::NOT_FOUND, 404},
             {grpc::StatusCode::DEADLINE_EXCEEDED, 504},
             {grpc::StatusCode::INTERNAL, 500}};
  for (const auto& m : map) {
    EXPECT_EQ(FromGrpcStatus(grpc::Status(m.code, "x")).http_status, m.http);
  }
  EXPECT_EQ(
      FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "full"))
          .code,
      "rate_limit_exceeded");
  // gRPC's message-size limit is about the request, not load: 413.
  const ApiError big = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                   "Received message larger than max (4194311 vs. 4194304)"));
  EXPECT_EQ(big.http_status, 413);
  EXPECT_EQ(big.code, "request_too_large");
}

TEST(OpenAiApiTest, ResponsesAndChunks) {
  ResponseMeta meta;
  meta.id = "cmpl-1";
  meta.created = 1700000000;
  meta.model = "s260k";
  pb::Usage usage;
  usage.set_prompt_tokens(4);
  usage.set_completion_tokens(2);
  json r =
      json::parse(ResponseJson(meta, {.text = "Hello", .token_ids = {10, 11}},
                               pb::FINISH_REASON_LENGTH, usage));
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][0]["text"], "Hello");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(r["choices"][0].contains("token_ids"));
  EXPECT_EQ(r["usage"]["total_tokens"], 6);

  meta.endpoint = Endpoint::kChat;
  meta.return_token_ids = true;
  r = json::parse(ResponseJson(meta, {.text = "Hi", .token_ids = {3}},
                               pb::FINISH_REASON_STOP, usage));
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["choices"][0]["message"]["content"], "Hi");
  EXPECT_EQ(r["choices"][0]["token_ids"], json::array({3}));

  json c = json::parse(ChunkJson(meta, {.text = "Hi", .token_ids = {3}},
                                 pb::FINISH_REASON_UNSPECIFIED, true));
  EXPECT_EQ(c["object"], "chat.completion.chunk");
  EXPECT_EQ(c["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  c = json::parse(ChunkJson(meta, {}, pb::FINISH_REASON_STOP, false));
  EXPECT_TRUE(c["choices"][0]["delta"].empty());
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  c = json::parse(UsageChunkJson(meta, usage));
  EXPECT_TRUE(c["choices"].empty());
  EXPECT_EQ(c["usage"]["completion_tokens"], 2);

  EXPECT_EQ(SseEvent("[DONE]"), "data: [DONE]\n\n");
  pb::ListModelsResponse models;
  models.add_models()->set_id("s260k");
  json m = json::parse(ModelsJson(models, 5));
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "s260k");
  EXPECT_EQ(m["data"][0]["object"], "model");
}

}  // namespace
}  // namespace latentkv::coordinator::http
