// cpp-httplib's connection executor with a bound (its own ThreadPool
// queues every accepted connection without limit: a flood of connections
// grows memory without end). Each accepted connection is a task; `threads`
// threads serve them (a streamed response holds its thread to the end) and
// at most `max_queued` wait. A connection beyond that is served by one extra
// overflow thread on which Overloaded() is true, so handlers answer 429/503
// at once and close (if even the overflow thread is `max_queued` behind, the
// accepting thread answers it itself). Used by the OpenAI HTTP server and
// the metrics endpoints.
// Thread-safety: thread-safe.
#ifndef LATENTKV_COMMON_HTTP_BOUNDED_TASK_QUEUE_H_
#define LATENTKV_COMMON_HTTP_BOUNDED_TASK_QUEUE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "httplib.h"

namespace latentkv::http {

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

}  // namespace latentkv::http

#endif  // LATENTKV_COMMON_HTTP_BOUNDED_TASK_QUEUE_H_
