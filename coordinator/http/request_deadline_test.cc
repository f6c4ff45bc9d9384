// RequestDeadline over real loopback connections of this process: an idle
// connection (no request delivered) is shut down after the deadline, the
// client seeing EOF; a connection whose request is in (Begin) is left alone
// until its response ends (Done), then gets a fresh deadline.
#include "coordinator/http/request_deadline.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace latentkv::coordinator::http {
namespace {

using std::chrono::milliseconds;

struct Pair {
  int client = -1, server = -1;
  std::string client_ip;
  int client_port = 0;
  ~Pair() {
    if (client >= 0) close(client);
    if (server >= 0) close(server);
  }
};

int Listen(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  listen(fd, 16);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

void Connect(int listener, int port, Pair* p) {
  p->client = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  ASSERT_EQ(connect(p->client, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  p->server = accept(listener, nullptr, nullptr);
  ASSERT_GE(p->server, 0);
  socklen_t len = sizeof(a);
  getsockname(p->client, reinterpret_cast<sockaddr*>(&a), &len);
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
  p->client_ip = ip;
  p->client_port = ntohs(a.sin_port);
}

// True when the client sees EOF within `timeout`.
bool ClientSeesEof(int fd, milliseconds timeout) {
  pollfd pfd{fd, POLLIN, 0};
  if (poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return false;
  char c;
  return recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

TEST(RequestDeadlineTest, IdleConnectionsAreClosedBusyOnesAreNot) {
  int port = 0;
  const int listener = Listen(&port);
  Pair idle, busy;
  Connect(listener, port, &idle);
  Connect(listener, port, &busy);
  RequestDeadline d(port, milliseconds(300), milliseconds(50));
  d.Begin(busy.client_ip, busy.client_port);  // its request is being served
  // The idle one trickles a byte now and then, as slowloris does: it does
  // not matter, a whole request must arrive in time.
  send(idle.client, "G", 1, 0);
  EXPECT_TRUE(ClientSeesEof(idle.client, milliseconds(3000)));
  EXPECT_GE(d.closed(), 1);
  EXPECT_FALSE(ClientSeesEof(busy.client, milliseconds(600)))
      << "a connection inside a request is never cut";
  d.Done(busy.client_ip, busy.client_port);  // response over: a new deadline
  EXPECT_FALSE(ClientSeesEof(busy.client, milliseconds(100)));
  EXPECT_TRUE(ClientSeesEof(busy.client, milliseconds(3000)));
  close(listener);
}

}  // namespace
}  // namespace latentkv::coordinator::http
