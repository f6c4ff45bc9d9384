// Test support: child processes of the real binaries, started on loopback.
#ifndef LATENTKV_TESTS_INTEGRATION_PROCESS_H_
#define LATENTKV_TESTS_INTEGRATION_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace latentkv::testing {

// Directory of the built binaries (build/bin).
std::string BinDir();
// A fresh temporary directory.
std::string MakeTempDir();
// The stories260K model converted once per test binary into a temp dir.
std::string Stories260kDir();

// A running child process; the destructor kills it (SIGKILL) if still alive,
// and so does the kernel when the test process dies first (a crash, a
// timeout's SIGKILL): PR_SET_PDEATHSIG, so no cluster outlives its test.
class Process {
 public:
  // Starts `args` (args[0] is the program path); stdout/stderr go to `log`.
  Process(std::vector<std::string> args, const std::string& log);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Sends `sig` and waits up to timeout_s for exit; returns the exit status
  // (as from waitpid) or -1 on timeout (then the process is SIGKILLed).
  int Stop(int sig, double timeout_s);
  bool Alive();

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// A direct child of a process: its pid, command name (/proc/pid/comm, at
// most 15 characters) and command line.
struct ChildProcess {
  pid_t pid = -1;
  std::string comm;
  std::vector<std::string> args;
};
// The direct children of `pid` now.
std::vector<ChildProcess> ChildrenOf(pid_t pid);

// A TCP port on 127.0.0.1 that was free a moment ago, chosen at random below
// the kernel's ephemeral range so no bind(0) or outgoing connection takes it
// before the server binds it (for servers whose port 0 means "off":
// --http_port, --metrics_port).
int PickFreePort();
// Whether a TCP socket can bind 127.0.0.1:port right now.
bool PortBindable(int port);
// Waits for a file with a non-empty first line; returns it or "" on timeout.
std::string WaitForLine(const std::string& path, double timeout_s);
// Runs a command, returns its stdout (stderr appended when merge_stderr) and
// sets *exit_code.
std::string RunCommand(const std::vector<std::string>& args, int* exit_code,
                       bool merge_stderr = false);

}  // namespace latentkv::testing

#endif  // LATENTKV_TESTS_INTEGRATION_PROCESS_H_
