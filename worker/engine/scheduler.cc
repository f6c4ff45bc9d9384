#include "worker/engine/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

Scheduler::Scheduler(const SchedulerOptions& options, KvCache* cache)
    : options_(options), cache_(cache) {
  for (int32_t l = 0; l < cache_->num_layers(); ++l) {
    total_pages_ += cache_->allocator(l).num_pages();
  }
}

Scheduler::~Scheduler() {
  for (auto& s : running_) s->kv.Release(*cache_);
  for (auto& s : waiting_) s->kv.Release(*cache_);
}

absl::Status Scheduler::Enqueue(std::unique_ptr<Sequence> seq) {
  if (num_waiting() >= options_.max_waiting) {
    seq->kv.Release(*cache_);  // imported or shared pages
    return absl::ResourceExhaustedError(absl::StrCat(
        "request queue is full (", options_.max_waiting, " waiting)"));
  }
  if (seq->kv.num_pages() == 0) seq->kv.Init(*cache_);  // imported: keep
  const int64_t most = std::min<int64_t>(
      seq->prompt_len + int64_t{seq->max_new_tokens}, seq->max_total_tokens);
  const int64_t need = seq->kv.PagesNeeded(*cache_, most);
  if (need > total_pages_) {
    seq->kv.Release(*cache_);
    return absl::InvalidArgumentError(
        absl::StrCat("request needs ", need, " KV pages for ", most,
                     " tokens but the whole cache holds ", total_pages_,
                     ": it can never fit"));
  }
  seq->running = false;
  waiting_.push_back(std::move(seq));
  return absl::OkStatus();
}

void Scheduler::Preempt(Sequence* seq) {
  seq->kv.Release(*cache_);
  seq->kv.Init(*cache_);
  seq->num_cached = 0;
  seq->running = false;
  ++seq->preemptions;
  ++preemptions_;
  preempted_.push_back(seq->id);
  auto it = std::find_if(running_.begin(), running_.end(),
                         [seq](const auto& p) { return p.get() == seq; });
  waiting_.push_front(std::move(*it));
  running_.erase(it);
}

bool Scheduler::Reserve(Sequence* seq, int64_t n) {
  while (true) {
    absl::Status st = seq->kv.Reserve(*cache_, n);
    if (st.ok()) return true;
    if (!absl::IsResourceExhausted(st) || !reclaim_ || !reclaim_()) {
      return false;
    }
  }
}

std::vector<ScheduledChunk> Scheduler::Schedule() {
  std::vector<ScheduledChunk> plan;
  int64_t budget = options_.max_step_tokens;
  // 1. Running sequences, oldest first.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i].get();
    const int64_t n = std::min({seq->pending(), budget, seq->kv.Room()});
    if (n <= 0) {
      ++i;
      continue;
    }
    if (Reserve(seq, n)) {
      plan.push_back({seq, seq->num_cached, static_cast<int32_t>(n),
                      seq->num_cached + n == int64_t(seq->tokens.size())});
      budget -= n;
      ++i;
      continue;
    }
    // Out of pages: preempt the newest running sequence (maybe this one).
    Sequence* victim = running_.back().get();
    Preempt(victim);
    if (victim == seq) break;
  }
  // 2. Admit waiting sequences in order.
  while (!waiting_.empty() && budget > 0 &&
         num_running() < options_.max_running) {
    Sequence* seq = waiting_.front().get();
    if (admit_hook_ && seq->num_cached == 0 && seq->kv.num_pages() == 0) {
      admit_hook_(seq);
    }
    const int64_t n = std::min({seq->pending(), budget, seq->kv.Room()});
    if (n <= 0) break;
    if (!Reserve(seq, n)) break;
    seq->running = true;
    plan.push_back({seq, seq->num_cached, static_cast<int32_t>(n),
                    seq->num_cached + n == int64_t(seq->tokens.size())});
    budget -= n;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  return plan;
}

std::unique_ptr<Sequence> Scheduler::Remove(const std::string& id) {
  auto pick = [&](auto& c) -> std::unique_ptr<Sequence> {
    auto it = std::find_if(c.begin(), c.end(),
                           [&](const auto& p) { return p->id == id; });
    if (it == c.end()) return nullptr;
    std::unique_ptr<Sequence> s = std::move(*it);
    c.erase(it);
    s->kv.Release(*cache_);
    s->running = false;
    return s;
  };
  if (auto s = pick(running_)) return s;
  return pick(waiting_);
}

}  // namespace latentkv::worker
