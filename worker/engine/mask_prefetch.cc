#include "worker/engine/mask_prefetch.h"

#include <utility>

namespace latentkv::worker {

void FillSequenceMask(Sequence* seq) {
  TokenConstraint& c = *seq->constraint;
  seq->mask.assign(c.mask_words(), 0);
  seq->mask_status = c.FillMask(absl::MakeSpan(seq->mask));
}

MaskPrefetch::~MaskPrefetch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void MaskPrefetch::Start(std::vector<Sequence*> seqs) {
  if (seqs.empty()) return;
  for (Sequence* s : seqs) s->mask_ready = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.insert(jobs_.end(), seqs.begin(), seqs.end());
    busy_ = true;
  }
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
  cv_.notify_all();
}

void MaskPrefetch::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock,
           [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !busy_; });
}

void MaskPrefetch::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stop_ || !jobs_.empty();
    });
    if (stop_) return;
    std::vector<Sequence*> jobs;
    jobs.swap(jobs_);
    lock.unlock();
    for (Sequence* s : jobs) {
      FillSequenceMask(s);
      s->mask_ready = true;
    }
    lock.lock();
    if (jobs_.empty()) {
      busy_ = false;
      cv_.notify_all();
    }
  }
}

}  // namespace latentkv::worker
