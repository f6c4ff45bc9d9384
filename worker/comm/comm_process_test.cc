// The collectives across processes: each rank is its own comm_rank_main
// process (spawned from here), meeting in a fresh FileStore directory on
// loopback.
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/latentkv-comm-proc-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

pid_t Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    return -1;
  }
  return pid;
}

// Waits for `pid` up to `timeout_s`; returns its exit code, or -1 if it was
// killed (by a signal, or by us on timeout).
int Wait(pid_t pid, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  int status = 0;
  while (true) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0) return -1;
    if (Clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Starts one process per mode (rank = index) and returns their exit codes.
std::vector<int> RunRanks(const std::vector<std::string>& modes,
                          int timeout_ms) {
  TempDir dir;
  const int size = static_cast<int>(modes.size());
  std::vector<pid_t> pids;
  for (int r = 0; r < size; ++r) {
    pids.push_back(Spawn({COMM_RANK_MAIN, absl::StrCat("--rank=", r),
                          absl::StrCat("--size=", size), "--dir=" + dir.path(),
                          "--prefix=proc", "--mode=" + modes[r],
                          absl::StrCat("--timeout_ms=", timeout_ms)}));
  }
  std::vector<int> codes;
  for (pid_t pid : pids) codes.push_back(pid < 0 ? -2 : Wait(pid, 20.0));
  return codes;
}

TEST(CommProcessTest, ThreeProcessesRunEveryCollective) {
  EXPECT_EQ(RunRanks({"check", "check", "check"}, 10000),
            (std::vector<int>{0, 0, 0}));
}

TEST(CommProcessTest, SurvivorsSeeADeadRankAsAnError) {
  const auto t0 = Clock::now();
  // Rank 1 exits right after the rendezvous; ranks 0 and 2 then reduce.
  EXPECT_EQ(RunRanks({"survive", "die", "survive"}, 2000),
            (std::vector<int>{0, 0, 0}));
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0);
}

}  // namespace
