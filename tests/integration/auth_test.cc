// API keys on the public API, over a real cluster: without a valid
// "Authorization: Bearer <key>" every Generation RPC is UNAUTHENTICATED and
// every HTTP route is 401 in OpenAI's error shape, while health checks stay
// open; with the key everything works, and the HTTP API forwards it; the
// CLI client presents it.
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;
using json = nlohmann::json;

constexpr char kKey[] = "sk-test-0123456789abcdef";

struct Http {
  int status = 0;
  std::string body;
};

Http Curl(int port, const std::string& path, const std::string& body,
          const std::string& auth) {
  std::vector<std::string> args = {
      "curl",
      "-sS",
      "--max-time",
      "60",
      "-w",
      "\n%{http_code}",
      "http://127.0.0.1:" + std::to_string(port) + path};
  if (!auth.empty()) args.insert(args.end(), {"-H", "Authorization: " + auth});
  if (!body.empty()) {
    args.insert(args.end(),
                {"-H", "Content-Type: application/json", "-d", body});
  }
  int code = -1;
  const std::string out = RunCommand(args, &code);
  Http r;
  const size_t nl = out.rfind('\n');
  if (code != 0 || nl == std::string::npos) return r;
  r.status = std::atoi(out.c_str() + nl + 1);
  r.body = out.substr(0, nl);
  return r;
}

class AuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions o;
    o.model_dir = Stories260kDir();
    o.http = true;
    o.api_key = kKey;
    cluster_ = new Cluster(o);
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  static grpc::Status Generate(const std::string& auth) {
    grpc::ClientContext ctx;
    if (!auth.empty()) ctx.AddMetadata("authorization", auth);
    pb::GenerateRequest req;
    req.set_prompt("Once upon a time");
    req.mutable_sampling()->set_max_tokens(4);
    req.mutable_sampling()->set_temperature(0);
    auto reader = cluster_->stub().Generate(&ctx, req);
    pb::GenerateResponse resp;
    while (reader->Read(&resp)) {
    }
    return reader->Finish();
  }
  static Cluster* cluster_;
};
Cluster* AuthTest::cluster_ = nullptr;

TEST_F(AuthTest, GrpcNeedsTheKeyButHealthDoesNot) {
  for (const std::string& bad :
       {std::string(), std::string("Bearer sk-wrong-0123456789abcdef"),
        std::string("Basic ") + kKey, std::string(kKey)}) {
    const grpc::Status st = Generate(bad);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << bad;
    EXPECT_EQ(st.error_message().find(kKey), std::string::npos);
    grpc::ClientContext ctx;
    if (!bad.empty()) ctx.AddMetadata("authorization", bad);
    pb::ListModelsResponse models;
    EXPECT_EQ(cluster_->stub().ListModels(&ctx, {}, &models).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext tctx;
    pb::TokenizeRequest treq;
    treq.set_text("secret");
    pb::TokenizeResponse tresp;
    EXPECT_EQ(cluster_->stub().Tokenize(&tctx, treq, &tresp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_TRUE(Generate(std::string("Bearer ") + kKey).ok());

  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
      cluster_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext hctx;
  grpc::health::v1::HealthCheckRequest hreq;
  grpc::health::v1::HealthCheckResponse hresp;
  ASSERT_TRUE(health->Check(&hctx, hreq, &hresp).ok());
  EXPECT_EQ(hresp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(AuthTest, HttpAnswers401InOpenAiShapeAndForwardsTheKey) {
  const int port = cluster_->http_port();
  const std::string body = R"({"prompt":"Once upon a time","max_tokens":4})";
  for (const std::string& bad :
       {std::string(), std::string("Bearer sk-wrong-0123456789abcdef")}) {
    for (const char* path : {"/v1/completions", "/v1/models", "/tokenize",
                             "/detokenize", "/metrics", "/v1/models/x"}) {
      const bool get = std::string(path) == "/v1/models" ||
                       std::string(path) == "/metrics" ||
                       std::string(path) == "/v1/models/x";
      const Http r = Curl(port, path, get ? "" : body, bad);
      EXPECT_EQ(r.status, 401) << path << " " << r.body;
      const json j = json::parse(r.body, nullptr, false);
      ASSERT_TRUE(j.is_object()) << r.body;
      EXPECT_EQ(j["error"]["code"], "invalid_api_key");
      EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    }
  }
  // HTTP health stays open, like gRPC health.
  EXPECT_EQ(Curl(port, "/health", "", "").status, 200);
  EXPECT_EQ(Curl(port, "/health/live", "", "").status, 200);
  const std::string good = std::string("Bearer ") + kKey;
  Http r = Curl(port, "/v1/completions", body, good);
  EXPECT_EQ(r.status, 200) << r.body;
  r = Curl(port, "/v1/models", "", good);
  EXPECT_EQ(r.status, 200) << r.body;
  // A chat request without max_tokens also tokenizes on the coordinator.
  r = Curl(port, "/v1/chat/completions",
           R"({"messages":[{"role":"user","content":"Hi"}],"max_tokens":3})",
           good);
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(AuthTest, CliClientPresentsTheKey) {
  int code = 0;
  std::string out = RunCommand(
      {BinDir() + "/latentkv", "generate", "--server=" + cluster_->address(),
       "--prompt=Once upon a time", "--max-tokens=4"},
      &code, /*merge_stderr=*/true);
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("API key"), std::string::npos) << out;
  out = RunCommand(
      {BinDir() + "/latentkv", "generate", "--server=" + cluster_->address(),
       "--prompt=Once upon a time", "--max-tokens=4",
       std::string("--api-key=") + kKey},
      &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out.rfind("Once upon a time", 0), 0u) << out;
}

}  // namespace
}  // namespace latentkv::testing
