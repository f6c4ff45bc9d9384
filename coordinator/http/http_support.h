// Pieces under the OpenAI HTTP server (http_server.h); the bounded
// connection executor is common/http/bounded_task_queue.h.
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

#include "common/http/bounded_task_queue.h"
#include "httplib.h"

namespace latentkv::coordinator::http {

using ::latentkv::http::BoundedTaskQueue;

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
