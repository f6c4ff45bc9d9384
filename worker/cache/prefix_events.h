// The numbered, bounded log of a prefix index's changes, read by other
// threads (the worker's heartbeats to the coordinator's KV-aware router) while
// the engine thread appends to it.
#ifndef LATENTKV_WORKER_CACHE_PREFIX_EVENTS_H_
#define LATENTKV_WORKER_CACHE_PREFIX_EVENTS_H_

#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/chain_key.h"

namespace latentkv::worker {

using kvstore::BlockKey;

// One change of the index: keys stored (true) or removed (false).
struct PrefixEvent {
  bool stored = true;
  std::vector<BlockKey> keys;
};

// The index's changes for a reader: events numbered 1, 2, ... in order.
struct PrefixCacheUpdate {
  int32_t block_tokens = 0;  // tokens per block (the page size)
  // True: `events` is one stored event with every key held now, replacing
  // whatever the reader had; it reflects events up to last_seq.
  bool snapshot = false;
  uint64_t first_seq = 0;  // number of events[0] (not a snapshot)
  uint64_t last_seq = 0;   // number of the newest event reflected
  std::vector<PrefixEvent> events;
};

// Thread-safe: Append from one writer, reads from any thread.
class PrefixEventLog {
 public:
  // Keeps at most `max_events` (> 0) events; a reader further behind gets a
  // snapshot instead.
  PrefixEventLog(int32_t block_tokens, int64_t max_events);

  // Numbers `events` (in order) and applies them to the set of keys held.
  void Append(std::vector<PrefixEvent> events);
  // Events after `after_seq`, or a snapshot when asked for, or when the
  // reader is ahead of the log or behind its oldest event.
  PrefixCacheUpdate Updates(uint64_t after_seq, bool snapshot) const;
  // Tokens of the longest run of leading `keys` (chain keys of consecutive
  // blocks) held: block_tokens per key.
  int64_t HeldTokens(const std::vector<BlockKey>& keys) const;

 private:
  const int32_t block_tokens_;
  const int64_t max_events_;
  mutable absl::Mutex mu_;
  std::deque<std::pair<uint64_t, PrefixEvent>> log_ ABSL_GUARDED_BY(mu_);
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;  // number of the newest event
  absl::flat_hash_set<BlockKey> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_CACHE_PREFIX_EVENTS_H_
