// A modern model served end to end: the real SmolLM2-135M-Instruct GGUF
// (Q4_1 matrices, Q8_0 tied embedding, byte-level BPE with ChatML) loaded
// directly, kept quantized, and served through gRPC and the OpenAI API; its
// README's known greedy answer is the expectation. Then the same model
// converted to a safetensors directory (`convert --from gguf`: dequantized
// f32 weights, tokenizer.json, tokenizer_config.json) gives the same answer,
// and so do three tensor-parallel ranks on quantized shards.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

namespace pb = ::latentkv::v1;
using json = nlohmann::json;

const std::string kGguf = std::string(LATENTKV_SHARED_DIR) +
                          "/models/smollm2-135m-instruct/"
                          "SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kChatMl =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n";
const std::string kAnswer = "The capital of France is Paris.";

TEST(SmolLm2Test, ServesTheKnownAnswerOverGrpcAndOpenAi) {
  ClusterOptions o;
  o.model_dir = kGguf;
  o.http = true;
  o.coordinator_args = {"--served_model_name=smollm2-135m-instruct"};
  Cluster cluster(o);
  pb::Generation::Stub* stub = &cluster.stub();

  // gRPC: greedy ChatML; the model ends its turn with <|im_end|> (its EOS).
  StreamResult r = Generate(*stub, Greedy(kChatMl, 32));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message() << cluster.Logs();
  EXPECT_EQ(r.text, kAnswer);
  EXPECT_EQ(r.finish, pb::FINISH_REASON_STOP);
  EXPECT_LT(r.tokens.size(), 32u);

  // Token ids in, with the prompt tokenized by the coordinator: no BOS is
  // added (add_bos_token false) and the ChatML markers are special tokens.
  {
    grpc::ClientContext ctx;
    pb::TokenizeRequest req;
    req.set_text(kChatMl);
    pb::TokenizeResponse resp;
    ASSERT_TRUE(stub->Tokenize(&ctx, req, &resp).ok());
    ASSERT_GT(resp.token_ids_size(), 4);
    EXPECT_EQ(resp.token_ids(0), 1);  // <|im_start|>
    int im_end = 0;
    for (int id : resp.token_ids()) im_end += id == 2;
    EXPECT_EQ(im_end, 1);
  }

  // OpenAI chat: the GGUF's own chat template (with its default system
  // prompt); the served model name is the id.
  int code = -1;
  const std::string port = std::to_string(cluster.http_port());
  std::string out = RunCommand(
      {"curl", "-sS", "--max-time", "60",
       "http://127.0.0.1:" + port + "/v1/chat/completions", "-H",
       "Content-Type: application/json", "-d",
       R"({"model":"smollm2-135m-instruct","messages":[{"role":"user",)"
       R"("content":"What is the capital of France?"}],"max_tokens":32,)"
       R"("temperature":0})"},
      &code);
  ASSERT_EQ(code, 0) << out;
  json j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["model"], "smollm2-135m-instruct") << out;
  EXPECT_EQ(j["choices"][0]["message"]["content"], kAnswer) << out;
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop") << out;

  out = RunCommand({"curl", "-sS", "--max-time", "10",
                    "http://127.0.0.1:" + port + "/v1/models"},
                   &code);
  j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["data"][0]["id"], "smollm2-135m-instruct") << out;

  // The default worker's 256 MiB of KV holds fewer tokens than the model's
  // 8192 (46 KB a token): that is the served context. A chat request
  // without max_tokens takes what it leaves (it used to ask for 8191 - the
  // prompt, which never fit: a 429), and a request that can never fit is a
  // 400, not a 429 that clients retry.
  grpc::ClientContext mctx;
  pb::ListModelsResponse models;
  ASSERT_TRUE(stub->ListModels(&mctx, {}, &models).ok());
  const uint32_t context = models.models(0).max_context();
  EXPECT_GT(context, 4000u);
  EXPECT_LT(context, 8192u);
  EXPECT_EQ(models.models(0).max_context(), context);
  out = RunCommand(
      {"curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}",
       "http://127.0.0.1:" + port + "/v1/chat/completions", "-H",
       "Content-Type: application/json", "-d",
       R"({"model":"smollm2-135m-instruct","messages":[{"role":"user",)"
       R"("content":"What is the capital of France?"}],"temperature":0})"},
      &code);
  EXPECT_EQ(out.substr(out.rfind('\n') + 1), "200") << out;
  j = json::parse(out.substr(0, out.rfind('\n')), nullptr, false);
  EXPECT_EQ(j["choices"][0]["message"]["content"], kAnswer) << out;
  pb::GenerateRequest over = Greedy(kChatMl, 10);
  grpc::ClientContext tctx;
  pb::TokenizeRequest treq;
  treq.set_text(kChatMl);
  treq.set_add_bos(true);
  pb::TokenizeResponse tresp;
  ASSERT_TRUE(stub->Tokenize(&tctx, treq, &tresp).ok());
  const int prompt_tokens = tresp.token_ids_size();  // with BOS: at least
  over.mutable_sampling()->set_max_tokens(context);  // + the prompt: over
  r = Generate(*stub, over);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("KV memory"), std::string::npos)
      << r.status.error_message();
  over.mutable_sampling()->set_max_tokens(context - prompt_tokens);
  r = Generate(*stub, over);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.text, kAnswer);
}

// Three tensor-parallel ranks (9 heads, 3 KV heads: one KV head each) on
// quantized shards: o_proj and down_proj are cut along their columns in
// whole q4_1 blocks, partial sums all-reduced over Gloo.
TEST(SmolLm2Test, TensorParallelQuantizedShardsGiveTheSameAnswer) {
  ClusterOptions o;
  o.model_dir = kGguf;
  o.tp = 3;
  Cluster cluster(o);
  StreamResult r = Generate(cluster.stub(), Greedy(kChatMl, 32));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message() << cluster.Logs();
  EXPECT_EQ(r.text, kAnswer);
  EXPECT_EQ(r.finish, pb::FINISH_REASON_STOP);
}

TEST(SmolLm2Test, ConvertedDirectoryGivesTheSameAnswer) {
  const std::string dir = MakeTempDir() + "/m";
  int code = -1;
  std::string out =
      RunCommand({BinDir() + "/latentkv", "convert", "--from=gguf",
                  "--checkpoint=" + kGguf, "--out=" + dir},
                 &code, /*merge_stderr=*/true);
  ASSERT_EQ(code, 0) << out;
  out = RunCommand({BinDir() + "/latentkv", "generate", "--model=" + dir,
                    "--prompt=" + kChatMl, "--max-tokens=32"},
                   &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(out.substr(0, kChatMl.size()), kChatMl);
  EXPECT_EQ(out.substr(kChatMl.size()), kAnswer + "\n") << out;
  // The directory keeps the template, BOS/EOS and the vocabulary.
  out = RunCommand({"cat", dir + "/tokenizer_config.json"}, &code);
  json cfg = json::parse(out, nullptr, false);
  ASSERT_FALSE(cfg.is_discarded()) << out;
  EXPECT_NE(cfg.value("chat_template", "").find("<|im_start|>"),
            std::string::npos);
  out = RunCommand({BinDir() + "/latentkv", "inspect", dir}, &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("vocab=49152"), std::string::npos) << out;
  EXPECT_NE(out.find("matrices dtype=f32"), std::string::npos) << out;
}

// The KV conversions read a GGUF as downloaded: converting it directly
// writes exactly the files converting its `--from gguf` directory writes
// (the same dequantized weights, the tokenizer from the GGUF's metadata).
TEST(SmolLm2Test, KvLatentFromTheGgufEqualsFromItsDirectory) {
  const std::string tmp = MakeTempDir();
  const std::string text =
      std::string(LATENTKV_SHARED_DIR) + "/text/tinystories_train_excerpt.txt";
  int code = -1;
  std::string out =
      RunCommand({BinDir() + "/latentkv", "convert", "--from=gguf",
                  "--checkpoint=" + kGguf, "--out=" + tmp + "/dir"},
                 &code, /*merge_stderr=*/true);
  ASSERT_EQ(code, 0) << out;
  for (const std::string& src : {kGguf, tmp + "/dir"}) {
    const std::string dst = tmp + (src == kGguf ? "/from_gguf" : "/from_dir");
    out = RunCommand({BinDir() + "/latentkv", "convert", "--model=" + src,
                      "--out=" + dst, "--kv-latent=d_qk=32,d_vo=32",
                      "--calib-text=" + text, "--calib-lines=6"},
                     &code, /*merge_stderr=*/true);
    ASSERT_EQ(code, 0) << out;
  }
  for (const char* name : {"config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json"}) {
    const std::string a =
        RunCommand({"sha256sum", tmp + "/from_gguf/" + name}, &code);
    const std::string b =
        RunCommand({"sha256sum", tmp + "/from_dir/" + name}, &code);
    ASSERT_EQ(code, 0) << name;
    EXPECT_EQ(a.substr(0, 64), b.substr(0, 64)) << name;
  }
}

}  // namespace
}  // namespace latentkv::testing
