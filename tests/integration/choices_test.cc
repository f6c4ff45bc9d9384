// Several prompts and several samples per request over HTTP (choices
// numbered prompt * n + sample), against single requests: greedy samples of
// one prompt equal the prompt's single answer, usage counts each prompt
// once, a stream carries every choice to its finish, and the n samples of a
// long prompt compute its blocks once (the worker's prefix-hit counter:
// the engine's prompt sharing).
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster.h"
#include "tests/integration/curl.h"
#include "tests/integration/process.h"

namespace latentkv::testing {
namespace {

using json = nlohmann::json;

std::string Text(Cluster& c, const std::string& prompt) {
  json req = {{"prompt", prompt},
              {"max_tokens", 8},
              {"temperature", 0},
              {"ignore_eos", true}};
  HttpResult r = Curl(c.http_port(), "/v1/completions", req.dump());
  EXPECT_EQ(r.status, 200) << r.body;
  return json::parse(r.body)["choices"][0]["text"];
}

TEST(ChoicesTest, PromptsTimesSamples) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.http = true;
  Cluster c(o);
  const std::vector<std::string> prompts = {"Once upon a time", "The cat"};
  const std::string a = Text(c, prompts[0]), b = Text(c, prompts[1]);
  json req = {{"prompt", prompts},
              {"n", 3},
              {"max_tokens", 8},
              {"temperature", 0},
              {"ignore_eos", true}};
  HttpResult r = Curl(c.http_port(), "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 6u) << r.body;
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["text"], i < 3 ? a : b) << i;
    EXPECT_EQ(j["choices"][i]["finish_reason"], "length");
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], 48);
  // Each prompt's tokens once (BOS + the words).
  json one = {{"prompt", prompts[0]}, {"max_tokens", 1}};
  const int p0 = json::parse(Curl(c.http_port(), "/v1/completions", one.dump())
                                 .body)["usage"]["prompt_tokens"];
  one["prompt"] = prompts[1];
  const int p1 = json::parse(Curl(c.http_port(), "/v1/completions", one.dump())
                                 .body)["usage"]["prompt_tokens"];
  EXPECT_EQ(j["usage"]["prompt_tokens"], p0 + p1);
  // Chat, streamed, n = 2: every choice's deltas reach its finish.
  req = {{"messages", {{{"role", "user"}, {"content", "Tell a story"}}}},
         {"n", 2},
         {"max_tokens", 5},
         {"temperature", 0},
         {"ignore_eos", true},
         {"stream", true}};
  r = Curl(c.http_port(), "/v1/chat/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  std::map<int, std::string> text;
  std::map<int, std::string> finish;
  size_t at = 0;
  while ((at = r.body.find("data: {", at)) != std::string::npos) {
    const size_t end = r.body.find("\n\n", at);
    const json chunk = json::parse(r.body.substr(at + 6, end - at - 6));
    at = end;
    for (const json& ch : chunk["choices"]) {
      const int i = ch["index"];
      if (ch["delta"].contains("content")) text[i] += ch["delta"]["content"];
      if (ch["finish_reason"].is_string()) finish[i] = ch["finish_reason"];
    }
  }
  ASSERT_EQ(text.size(), 2u) << r.body;
  EXPECT_EQ(text[0], text[1]);  // greedy
  EXPECT_EQ(finish[0], "length");
  EXPECT_EQ(finish[1], "length");
  EXPECT_NE(r.body.find("data: [DONE]"), std::string::npos);
}

TEST(ChoicesTest, SamplesOfALongPromptShareItsBlocks) {
  ClusterOptions o;
  o.model_dir = Stories260kDir();
  o.http = true;
  o.worker_args = {"--page_size=16"};
  Cluster c(o);
  std::string prompt = "Once upon a time";
  while (prompt.size() < 400) prompt += " there was a little girl who";
  json req = {{"prompt", prompt},
              {"n", 4},
              {"max_tokens", 4},
              {"temperature", 1},
              {"ignore_eos", true}};
  HttpResult r = Curl(c.http_port(), "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  const int64_t prompt_tokens = j["usage"]["prompt_tokens"];
  ASSERT_GT(prompt_tokens, 64);
  // Three samples shared every whole block of the first's prompt.
  const int64_t blocks = (prompt_tokens - 1) / 16 * 16;
  EXPECT_EQ(c.WorkerStats(0).prefix_hit_tokens(), 3 * blocks);
}

}  // namespace
}  // namespace latentkv::testing
