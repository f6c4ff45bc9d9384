// `latentkv serve` supervises its children: a SIGKILLed worker is restarted
// (with back-off) and serving resumes; a SIGKILLed coordinator stops the
// cluster with an error exit; a SIGKILLed serve takes every child with it
// (PR_SET_PDEATHSIG through --exit_with_parent_pid).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace latentkv::testing {
namespace {

pid_t ChildNamed(pid_t serve, const std::string& prefix) {
  for (const ChildProcess& c : ChildrenOf(serve)) {
    if (c.comm.rfind(prefix, 0) == 0) return c.pid;
  }
  return -1;
}

bool Gone(pid_t pid) {
  // A zombie (reaped by nobody yet) counts as gone.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  const size_t close = line.rfind(')');
  return close != std::string::npos && line.size() > close + 2 &&
         line[close + 2] == 'Z';
}

bool WaitUntil(const std::function<bool()>& cond, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(int64_t(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

std::string Generate(const std::string& addr, int* code) {
  return RunCommand({BinDir() + "/latentkv", "generate", "--server=" + addr,
                     "--prompt=Once upon a time", "--max-tokens=8"},
                    code);
}

struct Serve {
  std::string dir = MakeTempDir();
  std::unique_ptr<Process> p;
  std::string addr;
  Serve() {
    p = std::make_unique<Process>(
        std::vector<std::string>{BinDir() + "/latentkv", "serve",
                                 "--model=" + Stories260kDir(), "--port=0",
                                 "--port-file=" + dir + "/addr"},
        dir + "/serve.log");
    addr = WaitForLine(dir + "/addr", 60);
  }
  std::string Log() const {
    std::ifstream in(dir + "/serve.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

TEST(ServeSupervisionTest, AKilledWorkerIsRestartedAndServingResumes) {
  Serve s;
  ASSERT_FALSE(s.addr.empty()) << s.Log();
  const pid_t worker = ChildNamed(s.p->pid(), "latentkv-worke");
  ASSERT_GT(worker, 0) << s.Log();
  kill(worker, SIGKILL);
  pid_t fresh = -1;
  ASSERT_TRUE(WaitUntil(
      [&] {
        fresh = ChildNamed(s.p->pid(), "latentkv-worke");
        return fresh > 0 && fresh != worker;
      },
      30))
      << s.Log();
  // The new process registers once the old entry expires.
  int code = -1;
  std::string out;
  ASSERT_TRUE(WaitUntil(
      [&] {
        out = Generate(s.addr, &code);
        return code == 0;
      },
      30))
      << out << s.Log();
  EXPECT_EQ(out.rfind("Once upon a time", 0), 0u);
  EXPECT_NE(s.Log().find("restarting worker group mixed-0"), std::string::npos);
  EXPECT_EQ(s.p->Stop(SIGINT, 40), 0);
}

TEST(ServeSupervisionTest, AKilledCoordinatorStopsTheCluster) {
  Serve s;
  ASSERT_FALSE(s.addr.empty()) << s.Log();
  const pid_t coord = ChildNamed(s.p->pid(), "latentkv-coord");
  const pid_t worker = ChildNamed(s.p->pid(), "latentkv-worke");
  ASSERT_GT(coord, 0);
  ASSERT_GT(worker, 0);
  kill(coord, SIGKILL);
  EXPECT_TRUE(WaitUntil([&] { return !s.p->Alive(); }, 60)) << s.Log();
  const int status = s.p->Stop(SIGKILL, 1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_TRUE(Gone(worker));
  EXPECT_NE(s.Log().find("the coordinator exited: stopping"),
            std::string::npos);
}

TEST(ServeSupervisionTest, ChildrenDieWithAKilledServe) {
  Serve s;
  ASSERT_FALSE(s.addr.empty()) << s.Log();
  const auto children = ChildrenOf(s.p->pid());
  ASSERT_GE(children.size(), 2u);
  kill(s.p->pid(), SIGKILL);
  for (const ChildProcess& c : children) {
    EXPECT_TRUE(WaitUntil([pid = c.pid] { return Gone(pid); }, 60)) << c.comm;
  }
}

}  // namespace
}  // namespace latentkv::testing
