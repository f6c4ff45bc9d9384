#include "tests/integration/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

extern char** environ;

namespace latentkv::testing {

std::string BinDir() { return std::string(LATENTKV_BINARY_DIR) + "/bin"; }

namespace {

// The low end of the kernel's ephemeral range (ports it hands to bind(0) and
// to outgoing connections); 32768 when unreadable.
int EphemeralLow() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0;
  if (!(in >> low) || low <= 11000) low = 32768;
  return low;
}

}  // namespace

bool PortBindable(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

int PickFreePort() {
  // Below the ephemeral range: a port bind(0) returned and we closed could be
  // handed straight to someone else's connection or server before ours binds
  // it (seen as a flaky start-up). The kernel never assigns these on its
  // own, so the only competitors are other tests picking at random too.
  static const int low = EphemeralLow();
  static std::mutex mu;
  static std::mt19937 rng(
      static_cast<uint32_t>(getpid()) * 2654435761u ^
      static_cast<uint32_t>(
          std::chrono::steady_clock::now().time_since_epoch().count()));
  std::lock_guard<std::mutex> lock(mu);
  std::uniform_int_distribution<int> pick(10000, low - 1);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int port = pick(rng);
    if (PortBindable(port)) return port;
  }
  std::fprintf(stderr, "no free port below %d\n", low);
  std::abort();
}

namespace {

// Temporary directories made by this process, removed when it exits (unless
// LATENTKV_KEEP_TEST_DIRS is set, to read the logs of a failed run).
std::mutex temp_dirs_mu;
std::vector<std::string>* temp_dirs = nullptr;

void RemoveTempDirs() {
  std::lock_guard<std::mutex> lock(temp_dirs_mu);
  if (temp_dirs == nullptr || std::getenv("LATENTKV_KEEP_TEST_DIRS") != nullptr)
    return;
  for (const std::string& dir : *temp_dirs) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
}

}  // namespace

std::string MakeTempDir() {
  std::string tmpl = "/tmp/latentkv-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) std::abort();
  std::lock_guard<std::mutex> lock(temp_dirs_mu);
  if (temp_dirs == nullptr) {
    temp_dirs = new std::vector<std::string>();
    std::atexit(RemoveTempDirs);
  }
  temp_dirs->push_back(tmpl);
  return tmpl;
}

std::string Stories260kDir() {
  static std::once_flag once;
  static std::string dir;
  std::call_once(once, [] {
    dir = MakeTempDir() + "/stories260K";
    const std::string m =
        std::string(LATENTKV_SHARED_DIR) + "/models/stories260K";
    int code = 0;
    RunCommand({BinDir() + "/latentkv", "convert", "--from=llama2c",
                "--checkpoint=" + m + "/stories260K.bin",
                "--tokenizer=" + m + "/tok512.bin", "--out=" + dir},
               &code);
    if (code != 0) {
      std::fprintf(stderr, "converting stories260K failed\n");
      std::abort();
    }
  });
  return dir;
}

Process::Process(std::vector<std::string> args, const std::string& log) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  // fork + exec rather than posix_spawn: the child asks to be SIGKILLed when
  // the test process dies (PR_SET_PDEATHSIG), so a crashed or killed test
  // binary leaves no cluster processes behind. Only async-signal-safe calls
  // between fork and exec.
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0 || dup2(fd, 1) < 0 || dup2(1, 2) < 0) _exit(127);
    if (fd > 2) close(fd);
    execve(argv[0], argv.data(), environ);
    _exit(127);
  }
}

Process::~Process() {
  if (pid_ > 0 && !reaped_) Stop(SIGKILL, 10);
}

bool Process::Alive() {
  if (pid_ <= 0 || reaped_) return false;
  if (waitpid(pid_, &status_, WNOHANG) == pid_) {
    reaped_ = true;
    return false;
  }
  return true;
}

int Process::Stop(int sig, double timeout_s) {
  if (pid_ <= 0) return -1;
  if (reaped_) return status_;
  kill(pid_, sig);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(int64_t(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid_, &status_, WNOHANG) == pid_) {
      reaped_ = true;
      return status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status_, 0);
  reaped_ = true;
  return -1;
}

std::string WaitForLine(const std::string& path, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(int64_t(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(path);
    std::string line;
    if (in && std::getline(in, line) && !line.empty()) return line;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "";
}

std::string RunCommand(const std::vector<std::string>& args, int* exit_code,
                       bool merge_stderr) {
  std::string cmd;
  for (const auto& a : args) {
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    cmd += q + "' ";
  }
  if (merge_stderr) cmd += "2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {  // e.g. E2BIG: an argument list over the limit
    *exit_code = -1;
    return "popen failed: " + std::string(std::strerror(errno));
  }
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  *exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

std::vector<ChildProcess> ChildrenOf(pid_t pid) {
  std::vector<ChildProcess> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" +
                   std::to_string(pid) + "/children");
  pid_t c;
  while (in >> c) {
    ChildProcess child;
    child.pid = c;
    std::getline(std::ifstream("/proc/" + std::to_string(c) + "/comm"),
                 child.comm);
    std::ifstream cmd("/proc/" + std::to_string(c) + "/cmdline");
    std::string arg;
    while (std::getline(cmd, arg, '\0')) child.args.push_back(arg);
    out.push_back(std::move(child));
  }
  return out;
}

}  // namespace latentkv::testing
