// Socket options for latentkv's HTTP listeners (cpp-httplib servers: the
// coordinator's API port and every /metrics port).
//
// httplib's default sets SO_REUSEPORT as well as SO_REUSEADDR. With
// SO_REUSEPORT another process of the same user can bind the same port and
// take a share of the connections (requests, API keys and all), and a busy
// port does not fail to bind. ExclusiveListenOptions keeps SO_REUSEADDR only
// (a restart may rebind a port in TIME_WAIT) and leaves the port exclusive.
// Pass it to httplib::Server::set_socket_options before binding.
#ifndef LATENTKV_COMMON_METRICS_LISTEN_SOCKET_H_
#define LATENTKV_COMMON_METRICS_LISTEN_SOCKET_H_

#include <sys/socket.h>

namespace latentkv {

inline void ExclusiveListenOptions(int fd) {
  const int yes = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

}  // namespace latentkv

#endif  // LATENTKV_COMMON_METRICS_LISTEN_SOCKET_H_
