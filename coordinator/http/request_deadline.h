// A deadline on reading each HTTP request (slowloris): a connection of the
// HTTP port that has not delivered a whole request (headers and body)
// within `deadline` of opening, or of its previous response ending, is shut
// down, freeing its connection thread. cpp-httplib 0.11 only bounds each
// read, so a client trickling one header line every few seconds used to
// hold a thread forever; 64 of them hung the whole HTTP API.
//
// The server reports when a request's handler starts (Begin: the request is
// in, the connection is busy until Done, e.g. while a response streams) and
// when its response has ended (Done, from httplib's logger). A thread scans
// the process's sockets connected to the port every `interval` (by
// /proc/self/fd, getsockname and getpeername), keyed by the peer address.
// Thread-safety: all methods are thread-safe.
#ifndef LATENTKV_COORDINATOR_HTTP_REQUEST_DEADLINE_H_
#define LATENTKV_COORDINATOR_HTTP_REQUEST_DEADLINE_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace latentkv::coordinator::http {

class RequestDeadline {
 public:
  using Clock = std::chrono::steady_clock;
  RequestDeadline(
      int port, std::chrono::milliseconds deadline,
      std::chrono::milliseconds interval = std::chrono::milliseconds(250));
  ~RequestDeadline();
  RequestDeadline(const RequestDeadline&) = delete;
  RequestDeadline& operator=(const RequestDeadline&) = delete;

  // The request from peer `ip`:`port` is in; its connection is not shut
  // down until Done.
  void Begin(const std::string& ip, int port);
  // Its response has ended: the next request must arrive within the
  // deadline.
  void Done(const std::string& ip, int port);
  // Connections shut down so far.
  int64_t closed() const;

 private:
  struct Conn {
    Clock::time_point since;
    bool busy = false;
    bool seen = false;
  };
  void Loop();

  const int port_;
  const std::chrono::milliseconds deadline_, interval_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<std::string, int>, Conn> conns_;  // guarded by mu_
  int64_t closed_ = 0;                                 // guarded by mu_
  bool stop_ = false;                                  // guarded by mu_
  std::thread thread_;
};

}  // namespace latentkv::coordinator::http

#endif  // LATENTKV_COORDINATOR_HTTP_REQUEST_DEADLINE_H_
