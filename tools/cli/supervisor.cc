// Supervision of serve's children (supervisor.h).
#include "tools/cli/supervisor.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <thread>

extern char** environ;

namespace latentkv::cli {

pid_t SpawnProcess(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // Children get default signal handling: unblock what this process blocks.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, &attr, argv.data(), environ) != 0) {
    pid = -1;
  }
  posix_spawnattr_destroy(&attr);
  return pid;
}

void StopProcess(pid_t pid, std::chrono::milliseconds grace) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  int status;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

Supervisor::~Supervisor() { StopAll(std::chrono::milliseconds(0)); }

int Supervisor::Add(std::string name, Factory factory, bool critical) {
  Unit u;
  u.name = std::move(name);
  u.factory = std::move(factory);
  u.critical = critical;
  u.backoff = options_.first_backoff;
  units_.push_back(std::move(u));
  Start(units_.back(), Clock::now());
  return static_cast<int>(units_.size()) - 1;
}

void Supervisor::Start(Unit& u, Clock::time_point now) {
  u.pids.clear();
  for (const auto& args : u.factory(u.restarts)) {
    u.pids.push_back(SpawnProcess(args));
  }
  u.started_at = now;
  u.waiting = false;
}

bool Supervisor::Poll(Clock::time_point now) {
  if (!failed_.empty()) return false;
  for (Unit& u : units_) {
    if (u.stopped) continue;
    if (u.waiting) {
      if (now >= u.restart_at) {
        ++u.restarts;
        std::fprintf(stderr, "latentkv serve: restarting %s (restart %d)\n",
                     u.name.c_str(), u.restarts);
        Start(u, now);
      }
      continue;
    }
    bool died = false;
    for (pid_t& p : u.pids) {
      int status;
      const pid_t r = p > 0 ? waitpid(p, &status, WNOHANG) : -1;
      if (p <= 0 || r == p || (r < 0 && errno == ECHILD)) {
        p = -1;
        died = true;
      }
    }
    if (!died) continue;
    std::fprintf(stderr, "latentkv serve: %s exited\n", u.name.c_str());
    for (auto it = u.pids.rbegin(); it != u.pids.rend(); ++it) {
      StopProcess(*it, options_.stop_grace);
    }
    u.pids.clear();
    if (u.critical) {
      failed_ = u.name;
      return false;
    }
    if (now - u.started_at >= options_.healthy_after) {
      u.backoff = options_.first_backoff;
    }
    u.waiting = true;
    u.restart_at = now + u.backoff;
    u.backoff = std::min(u.backoff * 2, options_.max_backoff);
  }
  return true;
}

void Supervisor::Stop(int i, std::chrono::milliseconds grace) {
  Unit& u = units_[i];
  for (auto it = u.pids.rbegin(); it != u.pids.rend(); ++it) {
    StopProcess(*it, grace);
  }
  u.pids.clear();
  u.waiting = false;
  u.stopped = true;
}

void Supervisor::StopAll(std::chrono::milliseconds grace) {
  for (int i = static_cast<int>(units_.size()) - 1; i >= 0; --i) {
    Stop(i, grace);
  }
}

}  // namespace latentkv::cli
