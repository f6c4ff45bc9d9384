#include "coordinator/kv_index.h"

#include "kvstore/chain_key.h"

namespace latentkv::coordinator {

const std::vector<kvstore::BlockKey>& PromptKeys::For(
    int32_t block_tokens) const {
  auto it = by_size_.find(block_tokens);
  if (it == by_size_.end()) {
    it = by_size_
             .emplace(block_tokens, kvstore::PrefixKeys(prompt_, block_tokens))
             .first;
  }
  return it->second;
}

KvIndex::Ack KvIndex::Apply(const std::string& worker, const KvIndexUpdate& u) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerKeys& w = workers_[worker];
  if (u.block_tokens <= 0) return {w.applied, true};
  if (u.snapshot) {
    w.block_tokens = u.block_tokens;
    w.predicted.clear();
    w.keys.clear();
    for (const auto& [stored, keys] : u.events) {
      if (stored) w.keys.insert(keys.begin(), keys.end());
    }
    w.applied = u.last_seq;
    return {w.applied, false};
  }
  // Incremental events need a base: a snapshot first, then no gap.
  if (w.block_tokens != u.block_tokens || u.first_seq > w.applied + 1) {
    return {w.applied, true};
  }
  for (size_t i = 0; i < u.events.size(); ++i) {
    const uint64_t seq = u.first_seq + i;
    if (seq <= w.applied) continue;  // already applied (a resent update)
    const auto& [stored, keys] = u.events[i];
    for (uint64_t k : keys) {
      if (stored) {
        w.keys.insert(k);
      } else {
        w.keys.erase(k);
        w.predicted.erase(k);  // evicted: no longer a good guess
      }
    }
    w.applied = seq;
  }
  return {w.applied, false};
}

void KvIndex::Remove(const std::string& worker) {
  std::lock_guard<std::mutex> lock(mu_);
  workers_.erase(worker);
}

void KvIndex::Predict(const std::string& worker, const PromptKeys& prompt,
                      TimePoint now) {
  if (options_.predict_ttl.count() <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second.block_tokens <= 0) return;
  WorkerKeys& w = it->second;
  const std::vector<kvstore::BlockKey>& keys = prompt.For(w.block_tokens);
  if (static_cast<int64_t>(w.predicted.size() + keys.size()) >
      options_.max_predicted) {
    for (auto p = w.predicted.begin(); p != w.predicted.end();) {
      if (p->second <= now) {
        w.predicted.erase(p++);
      } else {
        ++p;
      }
    }
  }
  const TimePoint expiry = now + options_.predict_ttl;
  for (kvstore::BlockKey k : keys) {
    if (static_cast<int64_t>(w.predicted.size()) >= options_.max_predicted) {
      break;
    }
    if (!w.keys.contains(k)) w.predicted[k] = expiry;
  }
}

std::map<std::string, int64_t> KvIndex::Overlaps(const PromptKeys& prompt,
                                                 TimePoint now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, int64_t> out;
  for (const auto& [id, w] : workers_) {
    if (w.block_tokens <= 0 || (w.keys.empty() && w.predicted.empty())) {
      continue;
    }
    int64_t blocks = 0;
    for (kvstore::BlockKey k : prompt.For(w.block_tokens)) {
      if (!w.keys.contains(k)) {
        auto p = w.predicted.find(k);
        if (p == w.predicted.end() || p->second <= now) break;
      }
      ++blocks;
    }
    if (blocks > 0) out[id] = blocks * w.block_tokens;
  }
  return out;
}

int64_t KvIndex::blocks(const std::string& worker) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker);
  return it == workers_.end() ? 0
                              : static_cast<int64_t>(it->second.keys.size());
}

}  // namespace latentkv::coordinator
