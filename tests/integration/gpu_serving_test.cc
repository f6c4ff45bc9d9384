// The CUDA backend end to end (label gpu; built with -DLATENTKV_WITH_CUDA=ON,
// run by tools/gpu_check.sh on a GPU machine): local greedy generation on
// --device=cuda reproduces the published stories260K continuation (the same
// tokens as the CPU); a served cluster on the GPU answers and drains; the
// KV dtypes give the CPU's greedy text; a prefill worker and a decode
// worker on the same GPU hand the prompt's KV over (device -> transfer ->
// device).
#include <signal.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

constexpr char kPublished[] =
    "Once upon a time, there was a little girl named Lily. She loved to play "
    "outside in the park. One day, she saw a big, red ball. She wanted to "
    "play with it, but it was too high.";

std::string Generate(const std::vector<std::string>& extra, int* code) {
  std::vector<std::string> args = {
      BinDir() + "/latentkv", "generate", "--model=" + Stories260kDir(),
      "--prompt=Once upon a time", "--max-tokens=100"};
  args.insert(args.end(), extra.begin(), extra.end());
  return RunCommand(args, code);
}

TEST(GpuServingTest, LocalGreedyOnCudaReproducesPublishedContinuation) {
  int code = 0;
  const std::string out = Generate({"--device=cuda"}, &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(out.rfind(kPublished, 0), 0u) << out;
}

TEST(GpuServingTest, EveryKvDtypeGivesTheCpuGreedyText) {
  for (const char* dt : {"f32", "bf16", "f16", "fp8_e4m3"}) {
    const std::string flag = std::string("--kv-dtype=") + dt;
    int cpu_code = 0, gpu_code = 0;
    const std::string cpu = Generate({"--device=cpu", flag}, &cpu_code);
    const std::string gpu = Generate({"--device=cuda", flag}, &gpu_code);
    ASSERT_EQ(cpu_code, 0) << cpu;
    ASSERT_EQ(gpu_code, 0) << gpu;
    EXPECT_EQ(gpu, cpu) << dt;
  }
}

class GpuServeTest : public ::testing::TestWithParam<std::vector<std::string>> {
};

TEST_P(GpuServeTest, ServeOnCudaAnswersAndDrains) {
  const std::string dir = MakeTempDir();
  std::vector<std::string> args = {
      BinDir() + "/latentkv", "serve",    "--model=" + Stories260kDir(),
      "--device=cuda",        "--port=0", "--port-file=" + dir + "/addr"};
  args.insert(args.end(), GetParam().begin(), GetParam().end());
  Process serve(args, dir + "/serve.log");
  const std::string addr = WaitForLine(dir + "/addr", 120);
  ASSERT_FALSE(addr.empty()) << "see " << dir << "/serve.log";
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

INSTANTIATE_TEST_SUITE_P(Topologies, GpuServeTest,
                         ::testing::Values(std::vector<std::string>{},
                                           std::vector<std::string>{
                                               "--prefill-workers=1",
                                               "--decode-workers=1"}));

}  // namespace
}  // namespace latentkv::testing
