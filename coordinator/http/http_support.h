// Two pieces under the OpenAI HTTP server (http_server.h):
//
// BoundedTaskQueue: cpp-httplib's connection executor with a bound. Each
// accepted connection is a task; `threads` threads serve them (a streamed
// response holds its thread to the end) and at most `max_queued` wait. A
// connection beyond that is served by one extra overflow thread on which
// Overloaded() is true, so the handlers answer 429 at once and close (if
// even the overflow thread is `max_queued` behind, the accepting thread
// answers it itself).
//
// HangupWatcher: notices clients that close their connection while their
// request is still generating (cpp-httplib 0.11 gives handlers no socket and
// no disconnect callback). It finds the connection's socket by its addresses
// and polls the watched sockets for a hang-up (POLLRDHUP/POLLHUP/POLLERR)
// every `interval` on one thread, calling the watch's callback once.
// Thread-safety: both classes are thread-safe.
#ifndef LATENTKV_COORDINATOR_HTTP_HTTP_SUPPORT_H_
#define LATENTKV_COORDINATOR_HTTP_HTTP_SUPPORT_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "httplib.h"

namespace latentkv::coordinator::http {

// Whether a browser page from `origin` (the Origin header) may call the
// API: it is in `allowed` (exact "scheme://host[:port]" entries, or "*").
// Browsers send Origin with every cross-origin request, so with no allowed
// origins (the default) no web page can fire requests at the API (a
// text/plain POST needs no CORS preflight); other clients send none.
bool OriginAllowed(const std::string& origin,
                   const std::vector<std::string>& allowed);

// A connected TCP socket of this process: its descriptor and peer.
struct Connection {
  int fd = -1;
  std::string peer_addr;  // numeric
  int peer_port = 0;
};
// The connected (not listening) sockets whose local port is `local_port`,
// found among /proc/self/fd. Shared by the hang-up watcher and the request
// deadline (request_deadline.h).
std::vector<Connection> ConnectionsOnPort(int local_port);

// Raises the accept backlog of this process's listening TCP socket on
// `port` to `backlog` (cpp-httplib 0.11 listens with a compiled-in backlog
// of 5, so bursts of connections were dropped unanswered): finds the socket
// among /proc/self/fd and listens again, which Linux allows to change the
// backlog. False when no such socket is found.
bool RaiseListenBacklog(int port, int backlog);

class BoundedTaskQueue final : public httplib::TaskQueue {
 public:
  // threads >= 1, max_queued >= 0.
  BoundedTaskQueue(int threads, int max_queued);
  ~BoundedTaskQueue() override;

  void enqueue(std::function<void()> fn) override;
  // Runs what is queued, then joins every thread.
  void shutdown() override;

  // True on a thread serving a connection that found no room.
  static bool Overloaded();
  // Connections that found no room, since start.
  int64_t rejected() const;

 private:
  void Work(bool overflow);

  const int max_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_, overflow_;  // guarded by mu_
  int idle_ = 0;                                       // guarded by mu_
  int64_t rejected_ = 0;                               // guarded by mu_
  bool stop_ = false;                                  // guarded by mu_
  std::vector<std::thread> threads_;
};

class HangupWatcher {
 public:
  explicit HangupWatcher(
      std::chrono::milliseconds interval = std::chrono::milliseconds(50));
  ~HangupWatcher();

  // Watches the connection `req` arrived on; `on_hangup` runs once (on the
  // watcher's thread, under its lock: keep it short, e.g. TryCancel) if the
  // peer hangs up before Unwatch. Returns an id for Unwatch, or -1 when the
  // socket was not found (nothing is watched then).
  int64_t Watch(const httplib::Request& req, std::function<void()> on_hangup);
  // Stops watching; after it returns, the callback is not running and will
  // not run. No-op for -1 or a finished watch.
  void Unwatch(int64_t id);

 private:
  struct Entry {
    int fd;
    std::function<void()> on_hangup;
  };
  void Loop();

  const std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, Entry> watched_;  // guarded by mu_
  int64_t next_id_ = 0;               // guarded by mu_
  bool stop_ = false;                 // guarded by mu_
  std::thread thread_;
};

// The socket of the server-side connection with these addresses (local
// port, peer address and port), or -1 (ConnectionsOnPort). Exposed for
// tests.
int FindConnectionSocket(int local_port, const std::string& peer_addr,
                         int peer_port);

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_HTTP_SUPPORT_H_
