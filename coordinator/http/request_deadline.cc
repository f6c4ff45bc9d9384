// The HTTP request deadline (request_deadline.h).
#include "coordinator/http/request_deadline.h"

#include <sys/socket.h>

#include <vector>

#include "coordinator/http/http_support.h"

namespace latentkv::coordinator::http {

RequestDeadline::RequestDeadline(int port, std::chrono::milliseconds deadline,
                                 std::chrono::milliseconds interval)
    : port_(port), deadline_(deadline), interval_(interval) {
  thread_ = std::thread([this] { Loop(); });
}

RequestDeadline::~RequestDeadline() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void RequestDeadline::Begin(const std::string& ip, int port) {
  std::lock_guard<std::mutex> lock(mu_);
  Conn& c = conns_[{ip, port}];
  c.busy = true;
  c.seen = true;
}

void RequestDeadline::Done(const std::string& ip, int port) {
  std::lock_guard<std::mutex> lock(mu_);
  Conn& c = conns_[{ip, port}];
  c.busy = false;
  c.seen = true;
  c.since = Clock::now();
}

int64_t RequestDeadline::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

void RequestDeadline::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, interval_, [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    const std::vector<Connection> peers = ConnectionsOnPort(port_);
    const Clock::time_point now = Clock::now();
    lock.lock();
    for (auto& [key, c] : conns_) c.seen = c.busy;  // busy ones stay
    for (const Connection& p : peers) {
      auto [it, fresh] = conns_.try_emplace({p.peer_addr, p.peer_port});
      Conn& c = it->second;
      if (fresh) c.since = now;
      c.seen = true;
      if (!c.busy && now - c.since > deadline_) {
        // The thread reading from it sees EOF and moves on. The fd is
        // checked again first: it may have been closed and reused since
        // the scan.
        for (const Connection& q : ConnectionsOnPort(port_)) {
          if (q.fd == p.fd && q.peer_addr == p.peer_addr &&
              q.peer_port == p.peer_port) {
            shutdown(p.fd, SHUT_RDWR);
            break;
          }
        }
        ++closed_;
        c.since = now;  // shut down once
      }
    }
    for (auto it = conns_.begin(); it != conns_.end();) {
      it = it->second.seen ? std::next(it) : conns_.erase(it);
    }
  }
}

}  // namespace latentkv::coordinator::http
