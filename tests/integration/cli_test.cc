// The latentkv CLI as a user runs it: local greedy generation reproduces the
// published stories260K continuation; eval's perplexity matches the
// independent float64 numpy reference (tools/reference/llama_ref.py) to 1e-4;
// inspect reports the KV bytes per token; serve brings up a cluster that
// answers and drains on SIGINT.
#include <signal.h>
#include <sys/wait.h>

#include <cmath>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

const std::string kText =
    std::string(LATENTKV_SHARED_DIR) + "/text/tinystories_train_excerpt.txt";

double Field(const std::string& out, const std::string& key) {
  std::smatch m;
  const std::regex re(key + "=([0-9.eE+-]+)");
  if (!std::regex_search(out, m, re)) return NAN;
  return std::stod(m[1]);
}

TEST(CliTest, LocalGreedyGenerateReproducesPublishedContinuation) {
  int code = 0;
  const std::string out = RunCommand(
      {BinDir() + "/latentkv", "generate", "--model=" + Stories260kDir(),
       "--prompt=Once upon a time", "--max-tokens=100"},
      &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(
      out.rfind(
          "Once upon a time, there was a little girl named Lily. She "
          "loved to play outside in the park. One day, she saw a big, red "
          "ball. She wanted to play with it, but it was too high.",
          0),
      0u)
      << out;
}

TEST(CliTest, EvalPerplexityMatchesFloat64Reference) {
  for (const std::string window : {"512", "48"}) {
    int code = 0;
    const std::string ours =
        RunCommand({BinDir() + "/latentkv", "eval",
                    "--model=" + Stories260kDir(), "--text=" + kText,
                    "--mode=lines", "--max-lines=60", "--window=" + window},
                   &code);
    ASSERT_EQ(code, 0) << ours;
    const std::string ref = RunCommand(
        {"/usr/bin/python3",
         std::string(LATENTKV_SOURCE_DIR) + "/tools/reference/llama_ref.py",
         "--model", Stories260kDir(), "--text", kText, "--mode", "lines",
         "--max-lines", "60", "--window", window},
        &code, /*merge_stderr=*/true);
    ASSERT_EQ(code, 0) << ref;
    EXPECT_EQ(Field(ours, "tokens"), Field(ref, "tokens")) << ours << ref;
    const double p = Field(ours, "ppl"), r = Field(ref, "ppl");
    EXPECT_NEAR(p / r, 1.0, 1e-4)
        << "window " << window << ": ours " << p << " reference " << r;
    EXPECT_GT(r, 1.5);
  }
}

TEST(CliTest, InspectReportsKvBytesPerToken) {
  int code = 0;
  const std::string out =
      RunCommand({BinDir() + "/latentkv", "inspect", Stories260kDir()}, &code);
  ASSERT_EQ(code, 0) << out;
  // 5 layers * 4 KV heads * (d_qk 8 + d_vo 8) * 4 bytes (f32 cache).
  EXPECT_EQ(Field(out, "kv_bytes_per_token"), 5 * 4 * 16 * 4) << out;
  EXPECT_NE(out.find("parameters="), std::string::npos);
  EXPECT_NE(out.find("layer 4: d_qk=8 d_vo=8 kv_values_per_token=64 "
                     "kv_bytes_per_token_layer=256"),
            std::string::npos)
      << out;
  // With a residency configuration: the policy of every layer.
  const std::string plan =
      RunCommand({BinDir() + "/latentkv", "inspect", Stories260kDir(),
                  "--kv_policy=spindle", "--kv_capacity=64"},
                 &code);
  ASSERT_EQ(code, 0) << plan;
  EXPECT_NE(plan.find("kv_residency=policy=spindle layers=C/cap64,C/cap64,"
                      "E/cap64"),
            std::string::npos)
      << plan;
  EXPECT_NE(plan.find("layer 0: d_qk=8 d_vo=8 kv_values_per_token=64 "
                      "kv_bytes_per_token_layer=256 policy=codebook"),
            std::string::npos)
      << plan;
  EXPECT_NE(plan.find("policy=snapkv kept_of_1000_prompt_tokens="),
            std::string::npos);
  EXPECT_NE(plan.find("capacity_tokens=64 max_kv_bytes=16384"),
            std::string::npos);
}

TEST(CliTest, CorruptModelIsRejectedWithTheTensorNamed) {
  const std::string dir = MakeTempDir() + "/bad";
  int code = 0;
  RunCommand({"cp", "-r", Stories260kDir(), dir}, &code);
  ASSERT_EQ(code, 0);
  // Truncate the safetensors file.
  RunCommand({"truncate", "-s", "100000", dir + "/model.safetensors"}, &code);
  const std::string out = RunCommand({BinDir() + "/latentkv", "inspect", dir},
                                     &code, /*merge_stderr=*/true);
  EXPECT_NE(code, 0);
  EXPECT_FALSE(out.empty());
}

// serve on one machine, in each topology: one worker; a tensor-parallel
// group of 2 processes; a prefill worker and a decode worker; two workers
// sharing a latentkv-kvstore; a prefill group of 2 ranks and a decode group
// of 1 sharing a kvstore.
class ServeTopologyTest
    : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(ServeTopologyTest, ServeAnswersAndDrainsOnSigint) {
  const std::string dir = MakeTempDir();
  std::vector<std::string> args = {BinDir() + "/latentkv", "serve",
                                   "--model=" + Stories260kDir(), "--port=0",
                                   "--port-file=" + dir + "/addr"};
  args.insert(args.end(), GetParam().begin(), GetParam().end());
  Process serve(args, dir + "/serve.log");
  const std::string addr = WaitForLine(dir + "/addr", 60);
  ASSERT_FALSE(addr.empty());
  int code = 0;
  const std::string out =
      RunCommand({BinDir() + "/latentkv", "generate", "--server=" + addr,
                  "--prompt=Once upon a time", "--max-tokens=30"},
                 &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out.rfind("Once upon a time, there was a little girl", 0), 0u)
      << out;
  const int status = serve.Stop(SIGINT, 30);
  ASSERT_NE(status, -1) << "serve did not exit after SIGINT";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

INSTANTIATE_TEST_SUITE_P(
    Topologies, ServeTopologyTest,
    ::testing::Values(std::vector<std::string>{},
                      std::vector<std::string>{"--tp=2"},
                      std::vector<std::string>{"--prefill-workers=1",
                                               "--decode-workers=1"},
                      std::vector<std::string>{"--workers=2", "--kvstore"},
                      // Tensor-parallel groups of mixed sizes, prefill and
                      // decode, sharing a kvstore.
                      std::vector<std::string>{
                          "--prefill-workers=1", "--decode-workers=1",
                          "--prefill-tp=2", "--decode-tp=1", "--kvstore"}));

}  // namespace
}  // namespace latentkv::testing

namespace latentkv::testing {
namespace {

// Ranks of one group configured differently (here the KV dtype) refuse to
// serve, every rank saying which differs.
TEST(CliTest, GroupWhoseRanksDisagreeRefusesToStart) {
  const std::string rdv = MakeTempDir();
  std::string outs[2];
  int codes[2] = {0, 0};
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      outs[r] = RunCommand(
          {BinDir() + "/latentkv-worker", "--model=" + Stories260kDir(),
           "--port=0", "--tp_size=2", "--tp_rank=" + std::to_string(r),
           "--tp_rendezvous=" + rdv, "--tp_timeout_s=20",
           r == 0 ? "--kv_dtype=f32" : "--kv_dtype=bf16"},
          &codes[r], /*merge_stderr=*/true);
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(codes[r], 2) << outs[r];
    EXPECT_NE(outs[r].find("rank 1 is configured differently"),
              std::string::npos)
        << outs[r];
  }
}

// --help lists the flags (with defaults) of every binary; Abseil's default
// matched none of ours ("No flags matched").
TEST(CliTest, HelpListsEveryFlagWithItsDefault) {
  struct Case {
    std::vector<std::string> cmd;
    std::vector<std::string> flags;
  };
  const std::vector<Case> cases = {
      {{BinDir() + "/latentkv", "serve", "--help"},
       {"--model", "--served_model_name", "--tp", "--weights_dtype",
        "--kv_policy"}},
      {{BinDir() + "/latentkv-coordinator", "--help"},
       {"--served_model_name", "--http_port"}},
      {{BinDir() + "/latentkv-worker", "--help"}, {"--weights_dtype"}},
      {{BinDir() + "/latentkv-kvstore", "--help"}, {"--capacity_mb"}},
  };
  for (const Case& c : cases) {
    int code = 0;
    const std::string out = RunCommand(c.cmd, &code, /*merge_stderr=*/true);
    EXPECT_EQ(out.find("No flags matched"), std::string::npos) << out;
    for (const std::string& f : c.flags) {
      EXPECT_NE(out.find(f + " "), std::string::npos) << c.cmd[0] << " " << f;
    }
    EXPECT_NE(out.find("default: "), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace latentkv::testing
