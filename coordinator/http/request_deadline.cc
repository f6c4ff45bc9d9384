// The HTTP request deadline (request_deadline.h).
#include "coordinator/http/request_deadline.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <vector>

#include "coordinator/http/http_support.h"

namespace latentkv::coordinator::http {
namespace {

// A connected socket of this process: its fd and peer.
struct Peer {
  int fd;
  std::string ip;
  int port;
};

// Connected (not listening) TCP sockets whose local port is `port`.
std::vector<Peer> ConnectionsTo(int port) {
  std::vector<Peer> out;
  ForEachOpenFd([&](int fd) {
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 ||
        listening) {
      return;  // not a socket, or a listening one
    }
    sockaddr_storage local{}, peer{};
    socklen_t llen = sizeof(local), plen = sizeof(peer);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) {
      return;
    }
    char ip[INET6_ADDRSTRLEN] = {0};
    int lport = -1, pport = -1;
    if (local.ss_family == AF_INET && peer.ss_family == AF_INET) {
      lport = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
      const auto* p = reinterpret_cast<sockaddr_in*>(&peer);
      pport = ntohs(p->sin_port);
      inet_ntop(AF_INET, &p->sin_addr, ip, sizeof(ip));
    } else if (local.ss_family == AF_INET6 && peer.ss_family == AF_INET6) {
      lport = ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
      const auto* p = reinterpret_cast<sockaddr_in6*>(&peer);
      pport = ntohs(p->sin6_port);
      inet_ntop(AF_INET6, &p->sin6_addr, ip, sizeof(ip));
    }
    if (lport == port) out.push_back({fd, ip, pport});
  });
  return out;
}

}  // namespace

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
    const std::vector<Peer> peers = ConnectionsTo(port_);
    const Clock::time_point now = Clock::now();
    lock.lock();
    for (auto& [key, c] : conns_) c.seen = c.busy;  // busy ones stay
    for (const Peer& p : peers) {
      auto [it, fresh] = conns_.try_emplace({p.ip, p.port});
      Conn& c = it->second;
      if (fresh) c.since = now;
      c.seen = true;
      if (!c.busy && now - c.since > deadline_) {
        // The thread reading from it sees EOF and moves on. The fd is
        // checked again first: it may have been closed and reused since
        // the scan.
        for (const Peer& q : ConnectionsTo(port_)) {
          if (q.fd == p.fd && q.ip == p.ip && q.port == p.port) {
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
