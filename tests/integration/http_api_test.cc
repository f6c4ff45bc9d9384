// The coordinator's OpenAI-compatible HTTP API over a real cluster, spoken
// to by curl (a process) and by Python's standard library
// (tests/integration/openai_client.py): completions and chat, streamed and
// not, equal to the gRPC Generate of the same greedy request; SSE framing;
// errors in OpenAI's shape; a client hanging up cancels its request; bounds
// (429) and no worker (503).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster.h"
#include "tests/integration/curl.h"
#include "tests/integration/metrics_scrape.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;
using json = nlohmann::json;

// openai_client.py COMMAND; its JSON report.
json Python(const std::string& cmd, int port, const std::string& path,
            const std::string& body = "") {
  std::vector<std::string> args = {
      "python3",
      std::string(LATENTKV_SOURCE_DIR) + "/tests/integration/openai_client.py",
      cmd, "http://127.0.0.1:" + std::to_string(port) + path};
  if (!body.empty()) args.push_back(body);
  int code = -1;
  const std::string out = RunCommand(args, &code, /*merge_stderr=*/true);
  EXPECT_EQ(code, 0) << out;
  json j = json::parse(out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << out;
  return j;
}

void ExpectOpenAiError(const std::string& body, const std::string& type,
                       const std::string& param = "") {
  json j = json::parse(body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << body;
  ASSERT_TRUE(j.contains("error")) << body;
  const json& e = j["error"];
  EXPECT_TRUE(e["message"].is_string() &&
              !e["message"].get<std::string>().empty());
  EXPECT_EQ(e["type"], type) << body;
  for (const char* k : {"param", "code"}) EXPECT_TRUE(e.contains(k)) << body;
  if (!param.empty()) {
    EXPECT_EQ(e["param"], param) << body;
  }
}

std::vector<int32_t> Ids(const json& a) {
  return a.is_array() ? a.get<std::vector<int32_t>>() : std::vector<int32_t>{};
}

class HttpApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    o.http = true;
    cluster_ = new Cluster(o);
    grpc::ClientContext ctx;
    pb::ListModelsResponse models;
    ASSERT_TRUE(cluster_->stub().ListModels(&ctx, {}, &models).ok());
    model_ = new std::string(models.models(0).id());
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete model_;
  }
  static int port() { return cluster_->http_port(); }
  static Cluster* cluster_;
  static std::string* model_;
};
Cluster* HttpApiTest::cluster_ = nullptr;
std::string* HttpApiTest::model_ = nullptr;

TEST_F(HttpApiTest, CompletionEqualsGrpcGreedy) {
  StreamResult g = Generate(cluster_->stub(), Greedy("Once upon a time", 40));
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  grpc::ClientContext tctx;
  pb::TokenizeRequest treq;
  treq.set_text("Once upon a time");
  treq.set_add_bos(true);
  pb::TokenizeResponse prompt;
  ASSERT_TRUE(cluster_->stub().Tokenize(&tctx, treq, &prompt).ok());

  const json req = {{"model", *model_},
                    {"prompt", "Once upon a time"},
                    {"max_tokens", 40},
                    {"temperature", 0},
                    {"return_token_ids", true}};
  HttpResult r = Curl(port(), "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], *model_);
  EXPECT_TRUE(j["id"].get<std::string>().rfind("cmpl-", 0) == 0);
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(Ids(j["choices"][0]["token_ids"]), g.tokens);
  EXPECT_EQ(j["choices"][0]["text"], g.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], g.tokens.size());
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt.token_ids_size());
  EXPECT_EQ(j["usage"]["total_tokens"],
            g.tokens.size() + prompt.token_ids_size());

  // The same prompt as token ids (no BOS added to ids) and as [string].
  json ids_req = req;
  ids_req["prompt"] = std::vector<int32_t>(prompt.token_ids().begin(),
                                           prompt.token_ids().end());
  r = Curl(port(), "/v1/completions", ids_req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Ids(json::parse(r.body)["choices"][0]["token_ids"]), g.tokens);
  json list_req = req;
  list_req["prompt"] = {"Once upon a time"};
  r = Curl(port(), "/v1/completions", list_req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Ids(json::parse(r.body)["choices"][0]["token_ids"]), g.tokens);
}

// An unseeded sample reports its seed; sending it back replays the text.
// vLLM's sampling fields reach the sampler (min_p = 1 is greedy).
TEST_F(HttpApiTest, ReportedSeedReplaysAndSamplingFieldsApply) {
  json req = {{"model", *model_},
              {"prompt", "Once upon a time"},
              {"max_tokens", 24},
              {"temperature", 1.0}};
  HttpResult r = Curl(port(), "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json first = json::parse(r.body);
  ASSERT_TRUE(first.contains("seed") && first["seed"].is_number_unsigned())
      << r.body;
  req["seed"] = first["seed"];
  r = Curl(port(), "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["choices"][0]["text"],
            first["choices"][0]["text"]);
  EXPECT_EQ(json::parse(r.body)["seed"], first["seed"]);

  json greedy = {{"model", *model_},
                 {"prompt", "Once upon a time"},
                 {"max_tokens", 24},
                 {"temperature", 0}};
  r = Curl(port(), "/v1/completions", greedy.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json want = json::parse(r.body)["choices"][0]["text"];
  greedy["temperature"] = 1.0;
  greedy["min_p"] = 1.0;
  r = Curl(port(), "/v1/completions", greedy.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["choices"][0]["text"], want);
  // Out of range, or unknown: a 400 naming it.
  greedy["presence_penalty"] = 5;
  EXPECT_EQ(Curl(port(), "/v1/completions", greedy.dump()).status, 400);
  greedy.erase("presence_penalty");
  greedy["guided_decoding_backend"] = "xgrammar";
  r = Curl(port(), "/v1/completions", greedy.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "guided_decoding_backend")
      << r.body;
}

// The routes tools expect beside the OpenAI API: health, one model,
// tokenize and detokenize (checked against the gRPC API), metrics.
TEST_F(HttpApiTest, HealthModelTokenizeDetokenizeMetrics) {
  HttpResult r = Curl(port(), "/health", "");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["status"], "ready");
  EXPECT_EQ(Curl(port(), "/health/live", "").status, 200);
  r = Curl(port(), "/v1/models/" + *model_, "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["id"], *model_);
  EXPECT_EQ(json::parse(r.body)["object"], "model");
  r = Curl(port(), "/v1/models/no-such-model", "");
  EXPECT_EQ(r.status, 404) << r.body;
  ExpectOpenAiError(r.body, "invalid_request_error");

  grpc::ClientContext tctx;
  pb::TokenizeRequest treq;
  treq.set_text("Once upon a time");
  treq.set_add_bos(true);
  pb::TokenizeResponse want;
  ASSERT_TRUE(cluster_->stub().Tokenize(&tctx, treq, &want).ok());
  r = Curl(port(), "/tokenize", R"({"prompt":"Once upon a time"})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["tokens"], std::vector<int32_t>(want.token_ids().begin(),
                                              want.token_ids().end()));
  EXPECT_EQ(j["count"], want.token_ids_size());
  EXPECT_GT(j["max_model_len"].get<int64_t>(), 0);
  r = Curl(port(), "/tokenize",
           R"({"prompt":"Once upon a time","add_special_tokens":false})");
  EXPECT_EQ(json::parse(r.body)["count"].get<int>() + 1,
            want.token_ids_size());  // without BOS
  r = Curl(port(), "/tokenize",
           R"({"messages":[{"role":"user","content":"Once upon a time"}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  const int chat_count = json::parse(r.body)["count"].get<int>();
  EXPECT_GT(chat_count, want.token_ids_size());
  // With tools, the prompt a chat request with them gets: this template
  // renders none, so they are described in a system message first.
  r = Curl(port(), "/tokenize",
           R"({"messages":[{"role":"user","content":"Once upon a time"}],
               "tools":[{"type":"function","function":{"name":"f"}}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_GT(json::parse(r.body)["count"].get<int>(), chat_count + 20);
  EXPECT_EQ(Curl(port(), "/tokenize",
                 R"({"prompt":"x","tools":[{"type":"function",
                     "function":{"name":"f"}}]})")
                .status,
            400);

  json detok = {{"tokens", std::vector<int32_t>(want.token_ids().begin() + 1,
                                                want.token_ids().end())}};
  r = Curl(port(), "/detokenize", detok.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["prompt"], "Once upon a time");
  r = Curl(port(), "/detokenize", R"({"tokens":[1, 99999999]})");
  EXPECT_EQ(r.status, 400) << r.body;
  r = Curl(port(), "/tokenize", R"({"text":"x"})");
  EXPECT_EQ(r.status, 400) << r.body;

  // The coordinator's metrics on the API port (no --metrics_port here),
  // counting every HTTP response with its reason, and tokens per model.
  ASSERT_EQ(Curl(port(), "/v1/completions",
                 R"({"prompt":"Once upon a time","max_tokens":3})")
                .status,
            200);
  r = Curl(port(), "/metrics", "");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::vector<Sample> samples = Parse(r.body);
  EXPECT_GE(Get(samples, "latentkv_http_responses_total",
                {{"route", "/v1/models/{id}"},
                 {"status", "404"},
                 {"reason", "model_not_found"}}),
            1)
      << r.body;
  EXPECT_GE(Get(samples, "latentkv_http_responses_total",
                {{"route", "/detokenize"}, {"status", "400"}}),
            1)
      << r.body;
  EXPECT_GE(Get(samples, "latentkv_http_responses_total",
                {{"route", "/health"}, {"status", "200"}}),
            1);
  EXPECT_GT(Get(samples, "latentkv_coordinator_prompt_tokens_total",
                {{"model", *model_}}),
            0)
      << r.body;
  EXPECT_GT(Get(samples, "latentkv_coordinator_generated_tokens_total",
                {{"model", *model_}}),
            0);
}

TEST_F(HttpApiTest, StreamedCompletionOverCurlIsWellFramedSse) {
  StreamResult g = Generate(cluster_->stub(), Greedy("The little dog", 30));
  ASSERT_TRUE(g.status.ok());
  const json req = {{"prompt", "The little dog"},
                    {"max_tokens", 30},
                    {"temperature", 0},
                    {"stream", true},
                    {"return_token_ids", true}};
  HttpResult r = Curl(port(), "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  // Events: "data: <json>\n\n" ..., then "data: [DONE]\n\n" and nothing else.
  ASSERT_GE(r.body.size(), 2u);
  EXPECT_EQ(r.body.substr(r.body.size() - 2), "\n\n");
  std::vector<std::string> events;
  for (size_t at = 0; at < r.body.size();) {
    const size_t end = r.body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos) << r.body.substr(at);
    events.push_back(r.body.substr(at, end - at));
    at = end + 2;
  }
  // At least one data event and [DONE]. How many chunks the 30 tokens come
  // in depends on timing (tokens ready together travel in one message), so
  // the count is not asserted.
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "data: [DONE]");
  std::string text;
  std::vector<int32_t> tokens;
  int finished = 0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    ASSERT_EQ(events[i].rfind("data: ", 0), 0u) << events[i];
    ASSERT_EQ(events[i].find('\n'), std::string::npos) << events[i];
    json c = json::parse(events[i].substr(6));
    EXPECT_EQ(c["object"], "text_completion");
    text += c["choices"][0]["text"].get<std::string>();
    const auto ids = Ids(c["choices"][0]["token_ids"]);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    if (!c["choices"][0]["finish_reason"].is_null()) {
      ++finished;
      EXPECT_EQ(i + 2, events.size()) << "finish_reason only on the last";
    }
  }
  EXPECT_EQ(finished, 1);
  EXPECT_EQ(text, g.text);
  EXPECT_EQ(tokens, g.tokens);
}

TEST_F(HttpApiTest, ChatOverPythonUrllibStreamedAndNot) {
  // The default template (stories260K has no tokenizer_config.json).
  StreamResult g = Generate(cluster_->stub(),
                            Greedy("user: Tell me a story\nassistant:", 25));
  ASSERT_TRUE(g.status.ok());
  json req = {
      {"model", *model_},
      {"messages", {{{"role", "user"}, {"content", "Tell me a story"}}}},
      {"max_completion_tokens", 25},
      {"temperature", 0},
      {"return_token_ids", true}};
  json r = Python("request", port(), "/v1/chat/completions", req.dump());
  ASSERT_EQ(r["status"], 200) << r;
  EXPECT_EQ(r["content_type"], "application/json");
  json body = json::parse(r["body"].get<std::string>());
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], g.text);
  EXPECT_EQ(Ids(body["choices"][0]["token_ids"]), g.tokens);
  EXPECT_EQ(body["usage"]["completion_tokens"], g.tokens.size());

  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  json s = Python("stream", port(), "/v1/chat/completions", req.dump());
  ASSERT_EQ(s["status"], 200) << s;
  EXPECT_EQ(s["content_type"], "text/event-stream");
  EXPECT_TRUE(s["framing_errors"].empty()) << s["framing_errors"];
  EXPECT_TRUE(s["done"]);
  EXPECT_TRUE(s["error"].is_null()) << s["error"];
  EXPECT_EQ(s["text"], g.text);
  EXPECT_EQ(Ids(s["token_ids"]), g.tokens);
  ASSERT_FALSE(s["finish_reasons"].empty());
  EXPECT_EQ(s["finish_reasons"].back(), "length");
  EXPECT_EQ(s["usage"]["completion_tokens"], g.tokens.size());
  EXPECT_EQ(s["usage"]["prompt_tokens"], body["usage"]["prompt_tokens"]);
}

TEST_F(HttpApiTest, ErrorsHaveOpenAiShapeAndStatus) {
  json r = Python("request", port(), "/v1/completions", "{not json");
  EXPECT_EQ(r["status"], 400);
  ExpectOpenAiError(r["body"], "invalid_request_error");

  r = Python("request", port(), "/v1/completions",
             R"({"prompt":"Once","n":129})");
  EXPECT_EQ(r["status"], 400);
  ExpectOpenAiError(r["body"], "invalid_request_error", "n");

  r = Python(
      "request", port(), "/v1/chat/completions",
      R"({"model":"no-such-model","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(r["status"], 404);
  ExpectOpenAiError(r["body"], "invalid_request_error", "model");
  EXPECT_EQ(json::parse(r["body"].get<std::string>())["error"]["code"],
            "model_not_found");

  // Refused by the coordinator's own validation (INVALID_ARGUMENT -> 400).
  std::string long_prompt;
  for (int i = 0; i < 400; ++i) long_prompt += "the big dog ";
  HttpResult c =
      Curl(port(), "/v1/completions", json{{"prompt", long_prompt}}.dump());
  EXPECT_EQ(c.status, 400);
  ExpectOpenAiError(c.body, "invalid_request_error");
  c = Curl(port(), "/v1/completions", R"({"prompt":"Once","temperature":-1})");
  EXPECT_EQ(c.status, 400);
  ExpectOpenAiError(c.body, "invalid_request_error");

  c = Curl(port(), "/v1/no/such/path", "");
  EXPECT_EQ(c.status, 404);
  ExpectOpenAiError(c.body, "invalid_request_error");
}

// Hostile bodies get clear errors and the server keeps serving: 60,000
// nested arrays (they used to kill the coordinator), a body over the 2 MiB
// limit (413, not 429), and a prompt too long for any tokenization of the
// context (400 before the tokenizer runs).
TEST_F(HttpApiTest, HostileBodiesGetClearErrorsAndServingGoesOn) {
  const std::string dir = MakeTempDir();
  auto post_file = [&](const std::string& body) {
    const std::string path = dir + "/body.json";
    std::ofstream(path, std::ios::binary) << body;
    int code = -1;
    const std::string out = RunCommand(
        {"curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", "-H",
         "Content-Type: application/json", "--data-binary", "@" + path,
         "http://127.0.0.1:" + std::to_string(port()) + "/v1/completions"},
        &code);
    HttpResult r;
    const size_t nl = out.rfind('\n');
    if (code != 0 || nl == std::string::npos) return r;
    r.status = std::atoi(out.c_str() + nl + 1);
    r.body = out.substr(0, nl);
    return r;
  };
  HttpResult r = post_file(R"({"prompt":)" + std::string(60000, '[') + "1" +
                           std::string(60000, ']') + "}");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("deeper than 64"), std::string::npos) << r.body;

  r = post_file(R"({"prompt":")" + std::string(10 << 20, 'a') + "\"}");
  EXPECT_EQ(r.status, 413) << r.body.substr(0, 300);

  r = post_file(R"({"prompt":")" + std::string(3 << 19, 'a') + "\"}");
  EXPECT_EQ(r.status, 400) << r.body.substr(0, 300);
  EXPECT_NE(r.body.find("refused untokenized"), std::string::npos)
      << r.body.substr(0, 300);

  r = Curl(port(), "/v1/completions",
           R"({"prompt":"Once upon a time","max_tokens":5})");
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(HttpApiTest, ListsTheModel) {
  HttpResult r = Curl(port(), "/v1/models", "");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], *model_);
  EXPECT_EQ(j["data"][0]["object"], "model");
}

TEST_F(HttpApiTest, ClientHangingUpCancelsItsRequest) {
  auto stats = [&] { return cluster_->WorkerStats(0); };
  const uint64_t before = stats().tokens_generated();
  // 500 tokens past EOS take ~0.1 s alone; the client leaves after one event.
  json d = Python("disconnect", port(), "/v1/completions",
                  R"({"prompt":"Once upon a time","max_tokens":500,
                      "ignore_eos":true,"stream":true,"temperature":0})");
  ASSERT_EQ(d["status"], 200) << d;
  EXPECT_EQ(d["first"].get<std::string>().rfind("data: {", 0), 0u) << d;
  pb::WorkerStats after;
  for (int i = 0; i < 300; ++i) {
    after = stats();
    if (after.running() == 0 && after.waiting() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(after.running(), 0u);
  EXPECT_LT(after.tokens_generated() - before, 500u)
      << "the request ran to the end although its client had gone";
}

// Bounds and failures: one HTTP thread and no queue, one request in flight
// at the coordinator, metrics to see admissions.
class HttpLimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    o.http = true;
    o.metrics = true;
    o.coordinator_args = {"--http_threads=1", "--http_max_queued=0",
                          "--max_inflight=1", "--http_request_deadline_s=2",
                          "--http_allowed_origins=https://ok.example"};
    cluster_ = new Cluster(o);
  }
  static void TearDownTestSuite() { delete cluster_; }
  static Cluster* cluster_;
};
Cluster* HttpLimitsTest::cluster_ = nullptr;

TEST_F(HttpLimitsTest, BusyConnectionThreadMeans429) {
  const int port = cluster_->http_port();
  // A connection that sends nothing holds the only thread (reading its
  // request line).
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  HttpResult r = Curl(port, "/v1/completions", R"({"prompt":"Once"})");
  EXPECT_EQ(r.status, 429) << r.body;
  ExpectOpenAiError(r.body, "rate_limit_error");
  close(fd);
  for (int i = 0; i < 100 && r.status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    r = Curl(port, "/v1/completions", R"({"prompt":"Once","max_tokens":2})");
  }
  EXPECT_EQ(r.status, 200) << r.body;
}

// Slowloris: a connection trickling one header line at a time holds the
// only thread (so others get 429) until the request deadline (2 s here)
// closes it; then requests are served again.
TEST_F(HttpLimitsTest, TricklingConnectionsAreClosedAtTheRequestDeadline) {
  const int port = cluster_->http_port();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  const std::string start = "GET /v1/models HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(send(fd, start.data(), start.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(start.size()));
  bool closed = false;
  for (int i = 0; i < 60 && !closed; ++i) {  // a header line every 250 ms
    const std::string line = "X-Slow-" + std::to_string(i) + ": 1\r\n";
    if (send(fd, line.data(), line.size(), MSG_NOSIGNAL) < 0) closed = true;
    char c;
    if (recv(fd, &c, 1, MSG_DONTWAIT) == 0) closed = true;
    if (i == 2) {  // the thread is held: others are turned away meanwhile
      HttpResult busy = Curl(port, "/v1/models", "");
      EXPECT_EQ(busy.status, 429) << busy.body;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_TRUE(closed) << "the trickling connection was never closed";
  close(fd);
  HttpResult r;
  for (int i = 0; i < 100 && r.status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    r = Curl(port, "/v1/models", "");
  }
  EXPECT_EQ(r.status, 200) << r.body;
}

// Web pages: from an allowed origin, a preflight is answered and responses
// carry Access-Control-Allow-Origin; any other origin gets 403 even for a
// "simple" text/plain POST (no preflight), so no page can fire requests.
TEST_F(HttpLimitsTest, OnlyAllowedOriginsReachTheApiFromBrowsers) {
  const std::string base =
      "http://127.0.0.1:" + std::to_string(cluster_->http_port());
  auto curl = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"curl", "-sS", "-i", "--max-time", "30"};
    args.insert(args.end(), extra.begin(), extra.end());
    int code = -1;
    return RunCommand(args, &code);
  };
  std::string out =
      curl({"-X", "OPTIONS", "-H", "Origin: https://ok.example", "-H",
            "Access-Control-Request-Method: POST", base + "/v1/completions"});
  EXPECT_NE(out.find("204"), std::string::npos) << out;
  EXPECT_NE(out.find("Access-Control-Allow-Origin: https://ok.example"),
            std::string::npos)
      << out;
  out = curl({"-H", "Origin: https://ok.example", base + "/v1/models"});
  EXPECT_NE(out.find("200 OK"), std::string::npos) << out;
  EXPECT_NE(out.find("Access-Control-Allow-Origin: https://ok.example"),
            std::string::npos);
  out = curl({"-H", "Origin: https://evil.example", "-H",
              "Content-Type: text/plain", "-d",
              R"({"prompt":"Once","max_tokens":2})", base + "/v1/completions"});
  EXPECT_NE(out.find("403"), std::string::npos) << out;
  EXPECT_NE(out.find("origin_not_allowed"), std::string::npos) << out;
  EXPECT_EQ(out.find("Access-Control-Allow-Origin"), std::string::npos);
}

TEST_F(HttpLimitsTest, CoordinatorAdmissionLimitMeans429) {
  // Freeze the worker so a gRPC request stays admitted.
  ASSERT_EQ(kill(cluster_->worker(0).pid(), SIGSTOP), 0);
  grpc::ClientContext ctx;
  auto reader = cluster_->stub().Generate(&ctx, Greedy("Once upon a time", 10));
  const std::string metrics_cmd =
      "curl -s http://127.0.0.1:" +
      std::to_string(cluster_->coordinator_metrics_port()) + "/metrics";
  bool admitted = false;
  for (int i = 0; i < 200 && !admitted; ++i) {
    int code;
    const std::string m = RunCommand({"sh", "-c", metrics_cmd}, &code);
    admitted =
        m.find("\nlatentkv_coordinator_queue_depth 1\n") != std::string::npos;
    if (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(admitted) << "queue depth never reached 1";
  HttpResult r = Curl(cluster_->http_port(), "/v1/completions",
                      R"({"prompt":"Once","max_tokens":2})");
  EXPECT_EQ(r.status, 429) << r.body;
  ExpectOpenAiError(r.body, "rate_limit_error");
  ctx.TryCancel();
  ASSERT_EQ(kill(cluster_->worker(0).pid(), SIGCONT), 0);
  pb::GenerateResponse resp;
  while (reader->Read(&resp)) {
  }
  reader->Finish();
}

TEST(HttpNoWorkerTest, NoWorkerMeans503) {
  const std::string dir = MakeTempDir();
  const int port = PickFreePort();
  Process coord(
      {BinDir() + "/latentkv-coordinator", "--model=" + Stories260kDir(),
       "--port=0", "--port_file=" + dir + "/c.addr",
       "--http_port=" + std::to_string(port)},
      dir + "/c.log");
  ASSERT_FALSE(WaitForLine(dir + "/c.addr", 30).empty());
  HttpResult r = Curl(port, "/v1/completions", R"({"prompt":"Once"})");
  EXPECT_EQ(r.status, 503) << r.body;
  ExpectOpenAiError(r.body, "server_error");
  // Live, not ready.
  EXPECT_EQ(Curl(port, "/health", "").status, 503);
  EXPECT_EQ(Curl(port, "/health/live", "").status, 200);
  EXPECT_EQ(coord.Stop(SIGTERM, 20), 0);
}

}  // namespace
}  // namespace latentkv::testing
