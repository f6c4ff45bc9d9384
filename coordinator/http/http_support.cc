#include "coordinator/http/http_support.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdlib>
#include <string>

namespace latentkv::coordinator::http {

bool OriginAllowed(const std::string& origin,
                   const std::vector<std::string>& allowed) {
  for (const std::string& a : allowed) {
    if (a == "*" || a == origin) return true;
  }
  return false;
}

namespace {

// Numeric address and port of a sockaddr (IPv4 or IPv6), or port -1.
std::pair<std::string, int> Endpoint(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    return {buf, ntohs(a->sin_port)};
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    return {buf, ntohs(a->sin6_port)};
  }
  return {"", -1};
}

// Calls fn(fd) for every descriptor this process has open.
void ForEachOpenFd(const std::function<void(int)>& fn) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end != e->d_name && *end == '\0') fn(static_cast<int>(fd));
  }
  closedir(dir);
}

// SO_ACCEPTCONN of a socket: 1 listening, 0 not, -1 not a socket.
int Listening(int fd) {
  int listening = 0;
  socklen_t len = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) {
    return -1;
  }
  return listening != 0 ? 1 : 0;
}

}  // namespace

bool RaiseListenBacklog(int port, int backlog) {
  bool found = false;
  ForEachOpenFd([&](int fd) {
    if (Listening(fd) != 1) return;
    sockaddr_storage addr{};
    socklen_t alen = sizeof(addr);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) {
      return;
    }
    if (Endpoint(addr).second == port && listen(fd, backlog) == 0) {
      found = true;
    }
  });
  return found;
}

std::vector<Connection> ConnectionsOnPort(int local_port) {
  std::vector<Connection> out;
  ForEachOpenFd([&](int fd) {
    if (Listening(fd) != 0) return;  // not a socket, or a listening one
    sockaddr_storage local{}, peer{};
    socklen_t llen = sizeof(local), plen = sizeof(peer);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0 ||
        Endpoint(local).second != local_port) {
      return;
    }
    auto [addr, port] = Endpoint(peer);
    out.push_back({fd, std::move(addr), port});
  });
  return out;
}

int FindConnectionSocket(int local_port, const std::string& peer_addr,
                         int peer_port) {
  for (const Connection& c : ConnectionsOnPort(local_port)) {
    if (c.peer_port == peer_port && c.peer_addr == peer_addr) return c.fd;
  }
  return -1;
}

HangupWatcher::HangupWatcher(std::chrono::milliseconds interval)
    : interval_(interval) {
  thread_ = std::thread([this] { Loop(); });
}

HangupWatcher::~HangupWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  thread_.join();
}

int64_t HangupWatcher::Watch(const httplib::Request& req,
                             std::function<void()> on_hangup) {
  const int fd =
      FindConnectionSocket(req.local_port, req.remote_addr, req.remote_port);
  if (fd < 0) return -1;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t id = next_id_++;
  watched_[id] = {fd, std::move(on_hangup)};
  cv_.notify_all();
  return id;
}

void HangupWatcher::Unwatch(int64_t id) {
  if (id < 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  watched_.erase(id);
}

void HangupWatcher::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, interval_);
    if (stop_) break;
    if (watched_.empty()) continue;
    std::vector<pollfd> fds;
    std::vector<int64_t> ids;
    for (const auto& [id, e] : watched_) {
      fds.push_back({e.fd, POLLRDHUP, 0});
      ids.push_back(id);
    }
    // Zero timeout: only reads the sockets' state, so holding the lock is
    // fine and Unwatch can rely on it.
    if (poll(fds.data(), fds.size(), 0) <= 0) continue;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
        auto it = watched_.find(ids[i]);
        it->second.on_hangup();
        watched_.erase(it);
      }
    }
  }
}

}  // namespace latentkv::coordinator::http
