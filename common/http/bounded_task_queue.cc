#include "common/http/bounded_task_queue.h"

#include <algorithm>
#include <utility>

namespace latentkv::http {
namespace {

thread_local bool t_overloaded = false;

}  // namespace

BoundedTaskQueue::BoundedTaskQueue(int threads, int max_queued)
    : max_queued_(max_queued) {
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { Work(false); });
  }
  threads_.emplace_back([this] { Work(true); });
}

BoundedTaskQueue::~BoundedTaskQueue() { shutdown(); }

bool BoundedTaskQueue::Overloaded() { return t_overloaded; }

int64_t BoundedTaskQueue::rejected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rejected_;
}

void BoundedTaskQueue::enqueue(std::function<void()> fn) {
  std::unique_lock<std::mutex> lock(mu_);
  // Room: an idle thread for every queued job, or fewer than max_queued
  // jobs waiting beyond the idle threads.
  const int waiting = static_cast<int>(jobs_.size()) - idle_;
  if (waiting < max_queued_) {
    jobs_.push_back(std::move(fn));
    cv_.notify_all();
    return;
  }
  ++rejected_;
  if (static_cast<int>(overflow_.size()) < std::max(1, max_queued_)) {
    overflow_.push_back(std::move(fn));
    cv_.notify_all();
    return;
  }
  lock.unlock();
  t_overloaded = true;  // the accepting thread answers 429 itself
  fn();
  t_overloaded = false;
}

void BoundedTaskQueue::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && threads_.empty()) return;
    stop_ = true;
    cv_.notify_all();
  }
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

void BoundedTaskQueue::Work(bool overflow) {
  t_overloaded = overflow;
  std::deque<std::function<void()>>& q = overflow ? overflow_ : jobs_;
  while (true) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!overflow) ++idle_;
      cv_.wait(lock, [&] { return !q.empty() || stop_; });
      if (!overflow) --idle_;
      if (q.empty()) return;  // stopping and drained
      fn = std::move(q.front());
      q.pop_front();
    }
    fn();
  }
}

}  // namespace latentkv::http
