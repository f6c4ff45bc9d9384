#include "worker/cache/prefix_events.h"

#include "common/check.h"

namespace latentkv::worker {

PrefixEventLog::PrefixEventLog(int32_t block_tokens, int64_t max_events)
    : block_tokens_(block_tokens), max_events_(max_events) {
  LATENTKV_CHECK(max_events > 0, "PrefixEventLog: max_events ", max_events);
}

void PrefixEventLog::Append(std::vector<PrefixEvent> events) {
  if (events.empty()) return;
  absl::MutexLock lock(&mu_);
  for (PrefixEvent& ev : events) {
    for (BlockKey k : ev.keys) {
      if (ev.stored) {
        keys_.insert(k);
      } else {
        keys_.erase(k);
      }
    }
    log_.emplace_back(++seq_, std::move(ev));
  }
  while (static_cast<int64_t>(log_.size()) > max_events_) log_.pop_front();
}

PrefixCacheUpdate PrefixEventLog::Updates(uint64_t after_seq,
                                          bool snapshot) const {
  PrefixCacheUpdate u;
  u.block_tokens = block_tokens_;
  absl::MutexLock lock(&mu_);
  u.last_seq = seq_;
  const uint64_t oldest = log_.empty() ? seq_ + 1 : log_.front().first;
  if (snapshot || after_seq > seq_ || after_seq + 1 < oldest) {
    u.snapshot = true;
    u.events.push_back({true, {keys_.begin(), keys_.end()}});
    return u;
  }
  u.first_seq = after_seq + 1;
  for (const auto& [seq, ev] : log_) {
    if (seq > after_seq) u.events.push_back(ev);
  }
  return u;
}

int64_t PrefixEventLog::HeldTokens(const std::vector<BlockKey>& keys) const {
  absl::MutexLock lock(&mu_);
  int64_t n = 0;
  for (BlockKey k : keys) {
    if (!keys_.contains(k)) break;
    n += block_tokens_;
  }
  return n;
}

}  // namespace latentkv::worker
