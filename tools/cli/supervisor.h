// The children of `latentkv serve` and what happens when one dies.
//
// A unit is a set of processes that live and die together: a worker group
// (its tensor-parallel ranks), the kvstore, the coordinator. When any
// process of a unit exits, the supervisor stops the rest of that unit and
// starts it again after a back-off (1 s, doubling to 30 s; reset once a
// start has lived a minute), with the argument lists its factory gives for
// the new incarnation (a fresh rendezvous id, a fixed port). A critical
// unit (the coordinator, whose routing state a restart would lose) is not
// restarted: its death makes Poll() report failure, and serve shuts the
// cluster down so that its own supervisor (systemd, Kubernetes) restarts
// everything. Every child is started with --exit_with_parent_pid, so none
// outlives serve, even when serve is SIGKILLed.
// Thread-safety: one thread (serve's main).
#ifndef LATENTKV_TOOLS_CLI_SUPERVISOR_H_
#define LATENTKV_TOOLS_CLI_SUPERVISOR_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace latentkv::cli {

// Starts `args` (args[0] the program) with every signal unblocked; -1 when
// it cannot be started.
pid_t SpawnProcess(const std::vector<std::string>& args);
// SIGTERM, then SIGKILL after `grace`; reaps the process.
void StopProcess(pid_t pid, std::chrono::milliseconds grace);

class Supervisor {
 public:
  using Clock = std::chrono::steady_clock;
  // The argument lists of a unit's processes for incarnation `n` (0 first).
  using Factory =
      std::function<std::vector<std::vector<std::string>>(int incarnation)>;

  struct Options {
    std::chrono::milliseconds first_backoff{1000};
    std::chrono::milliseconds max_backoff{30000};
    // A start that lived this long resets the back-off.
    std::chrono::milliseconds healthy_after{60000};
    std::chrono::milliseconds stop_grace{5000};  // of a unit's survivors
  };

  Supervisor() : Supervisor(Options()) {}
  explicit Supervisor(Options options) : options_(options) {}
  ~Supervisor();  // stops everything (no grace)

  // Starts a unit; its index. Its processes are stopped in reverse order.
  int Add(std::string name, Factory factory, bool critical);

  // Reaps exited children, stops the rest of their units and restarts the
  // units whose back-off has passed. False once a critical unit has died
  // (nothing is restarted then).
  bool Poll(Clock::time_point now);

  // The live processes of unit `i` (empty while it waits to restart).
  const std::vector<pid_t>& pids(int i) const { return units_[i].pids; }
  int restarts(int i) const { return units_[i].restarts; }
  // The unit that died critically ("" if none).
  const std::string& failed() const { return failed_; }

  // Stops unit `i` (each process with `grace`) for good.
  void Stop(int i, std::chrono::milliseconds grace);
  // Stops every unit, the last added first, each process with `grace`.
  void StopAll(std::chrono::milliseconds grace);

 private:
  struct Unit {
    std::string name;
    Factory factory;
    bool critical = false;
    std::vector<pid_t> pids;
    int restarts = 0;
    bool waiting = false;  // dead, restart due at `restart_at`
    bool stopped = false;  // by Stop(): never restarted
    Clock::time_point restart_at, started_at;
    std::chrono::milliseconds backoff{0};
  };
  void Start(Unit& u, Clock::time_point now);

  Options options_;
  std::vector<Unit> units_;
  std::string failed_;
};

}  // namespace latentkv::cli

#endif  // LATENTKV_TOOLS_CLI_SUPERVISOR_H_
