#include "coordinator/http/http_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <future>
#include <string>

#include "gtest/gtest.h"

namespace latentkv::coordinator::http {
namespace {

// The backlog as the kernel reports it (ss: Send-Q of a listening socket).
int ListenBacklogOf(int port) {
  const std::string cmd =
      "ss -Hltn sport = :" + std::to_string(port) + " 2>/dev/null";
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return -1;
  char state[32] = {0};
  int recv_q = -1, send_q = -1;
  const int n = fscanf(f, "%31s %d %d", state, &recv_q, &send_q);
  pclose(f);
  return n == 3 ? send_q : -1;
}

TEST(OriginAllowedTest, ExactOriginsOrTheWildcard) {
  EXPECT_FALSE(OriginAllowed("https://a.example", {}));
  EXPECT_TRUE(OriginAllowed("https://a.example", {"https://a.example"}));
  EXPECT_FALSE(OriginAllowed("https://a.example.evil", {"https://a.example"}));
  EXPECT_FALSE(OriginAllowed("http://a.example", {"https://a.example"}));
  EXPECT_TRUE(OriginAllowed("null", {"*"}));
}

TEST(RaiseListenBacklogTest, ListensAgainWithTheDeeperQueue) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 5), 0);  // what cpp-httplib 0.11 does
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  const int before = ListenBacklogOf(port);
  if (before < 0) GTEST_SKIP() << "ss (iproute2) is not available";
  EXPECT_EQ(before, 5);
  EXPECT_TRUE(RaiseListenBacklog(port, 200));
  EXPECT_EQ(ListenBacklogOf(port), 200);
  close(fd);
  EXPECT_FALSE(RaiseListenBacklog(port, 200)) << "no listener any more";
}

TEST(BoundedTaskQueueTest, ConnectionsBeyondTheBoundAreOverloaded) {
  BoundedTaskQueue q(/*threads=*/1, /*max_queued=*/1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> ran{0}, overloaded{0};
  auto job = [&] {
    if (BoundedTaskQueue::Overloaded()) {
      ++overloaded;
    } else {
      ++ran;
      released.wait();
    }
  };
  q.enqueue(job);  // takes the thread
  while (ran.load() == 0) std::this_thread::yield();
  q.enqueue(job);  // waits (1 queued allowed)
  q.enqueue(job);  // no room: overflow thread, Overloaded()
  for (int i = 0; i < 1000 && overloaded.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(overloaded.load(), 1);
  EXPECT_EQ(ran.load(), 1);
  EXPECT_EQ(q.rejected(), 1);
  release.set_value();
  q.shutdown();  // runs what is queued first
  EXPECT_EQ(ran.load(), 2);
  EXPECT_FALSE(BoundedTaskQueue::Overloaded());
}

// A connected pair on loopback: the accepted (server) side and the client.
struct Pair {
  int listener = -1, server = -1, client = -1;
  int server_port = 0, client_port = 0;
  Pair() {
    listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    listen(listener, 4);
    socklen_t len = sizeof(a);
    getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    server_port = ntohs(a.sin_port);
    client = socket(AF_INET, SOCK_STREAM, 0);
    connect(client, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    server = accept(listener, nullptr, nullptr);
    len = sizeof(a);
    getsockname(client, reinterpret_cast<sockaddr*>(&a), &len);
    client_port = ntohs(a.sin_port);
  }
  ~Pair() {
    for (int fd : {listener, server, client}) {
      if (fd >= 0) close(fd);
    }
  }
};

TEST(HangupWatcherTest, FindsTheConnectionAndSeesTheHangup) {
  Pair p;
  EXPECT_EQ(FindConnectionSocket(p.server_port, "127.0.0.1", p.client_port),
            p.server);
  EXPECT_EQ(FindConnectionSocket(p.server_port, "127.0.0.1", 1), -1);

  HangupWatcher w(std::chrono::milliseconds(5));
  httplib::Request req;
  req.local_port = p.server_port;
  req.remote_addr = "127.0.0.1";
  req.remote_port = p.client_port;
  std::atomic<int> hangups{0};
  const int64_t id = w.Watch(req, [&] { ++hangups; });
  ASSERT_GE(id, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(hangups.load(), 0) << "a live connection is not a hang-up";
  close(p.client);
  p.client = -1;
  for (int i = 0; i < 1000 && hangups.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(hangups.load(), 1);
  w.Unwatch(id);  // already finished: no-op

  Pair q;
  req.local_port = q.server_port;
  req.remote_port = q.client_port;
  const int64_t id2 = w.Watch(req, [&] { ++hangups; });
  w.Unwatch(id2);
  close(q.client);
  q.client = -1;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(hangups.load(), 1) << "no callback after Unwatch";
}

}  // namespace
}  // namespace latentkv::coordinator::http
