// The router's index of the workers' local prefix caches: which block keys
// (kvstore chain keys of token prefixes) each worker holds, kept from the
// numbered stored/removed events the workers send with their heartbeats.
//
// Events are applied in order: an update whose first event is past the next
// one expected (the coordinator missed some: restart, lost heartbeat) is
// refused with `resync`, and the worker sends a snapshot (every key it holds)
// next time. Events already applied (a resent update) are skipped.
// Overlap(w) for a prompt = tokens of its longest prefix of whole blocks that
// worker w holds: the prefill work a route to w saves.
// Events arrive only after a prompt was prefilled and a heartbeat passed, so
// a burst of requests sharing a new prefix would scatter: Predict() counts a
// routed prompt's blocks as held by its worker at once, for `predict_ttl`
// (by then the worker's own events say whether it kept them).
// Control-plane only: no gRPC. Thread-safety: all methods are thread-safe.
#ifndef LATENTKV_COORDINATOR_KV_INDEX_H_
#define LATENTKV_COORDINATOR_KV_INDEX_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/types/span.h"
#include "kvstore/chain_key.h"

namespace latentkv::coordinator {

struct KvIndexUpdate {
  int32_t block_tokens = 0;  // > 0
  bool snapshot = false;     // events = one stored event with every key
  uint64_t first_seq = 0;    // number of events[0] (not a snapshot)
  uint64_t last_seq = 0;     // number of the newest event reflected
  std::vector<std::pair<bool, std::vector<uint64_t>>> events;  // stored?, keys
};

struct KvIndexOptions {
  // How long a predicted block counts as held without an event; default 2 s
  // (a few heartbeats). 0 turns prediction off.
  std::chrono::milliseconds predict_ttl{2000};
  // Bound on predicted blocks per worker; default 65536.
  int64_t max_predicted = 65536;
};

// A prompt's chained block keys, hashed once per block size and shared by
// the calls that route one request (Overlaps, then Predict for the chosen
// workers). The prompt must outlive it; not thread-safe.
class PromptKeys {
 public:
  explicit PromptKeys(absl::Span<const int32_t> prompt) : prompt_(prompt) {}
  // The keys of the prompt's whole blocks of `block_tokens` (> 0).
  const std::vector<kvstore::BlockKey>& For(int32_t block_tokens) const;

 private:
  absl::Span<const int32_t> prompt_;
  mutable std::map<int32_t, std::vector<kvstore::BlockKey>> by_size_;
};

class KvIndex {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  explicit KvIndex(KvIndexOptions options = {}) : options_(options) {}
  struct Ack {
    uint64_t applied = 0;  // newest event number now reflected
    bool resync = false;   // send a snapshot
  };
  Ack Apply(const std::string& worker, const KvIndexUpdate& update);
  // Forgets a worker (removed, or registered anew).
  void Remove(const std::string& worker);
  // `worker` was chosen to run `prompt`: its whole blocks count as held
  // until now + predict_ttl (no-op before the worker's first update, whose
  // block size is needed).
  void Predict(const std::string& worker, const PromptKeys& prompt,
               TimePoint now);
  void Predict(const std::string& worker, absl::Span<const int32_t> prompt,
               TimePoint now) {
    Predict(worker, PromptKeys(prompt), now);
  }
  // Tokens of the longest cached (or, at `now`, predicted) prefix of
  // `prompt` per worker (workers with none are left out).
  std::map<std::string, int64_t> Overlaps(
      const PromptKeys& prompt,
      TimePoint now = std::chrono::steady_clock::now()) const;
  std::map<std::string, int64_t> Overlaps(
      absl::Span<const int32_t> prompt,
      TimePoint now = std::chrono::steady_clock::now()) const {
    return Overlaps(PromptKeys(prompt), now);
  }
  // Blocks the index holds for a worker.
  int64_t blocks(const std::string& worker) const;

 private:
  struct WorkerKeys {
    int32_t block_tokens = 0;
    uint64_t applied = 0;
    absl::flat_hash_set<uint64_t> keys;
    absl::flat_hash_map<uint64_t, TimePoint> predicted;  // key -> expiry
  };
  KvIndexOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, WorkerKeys> workers_;
};

}  // namespace latentkv::coordinator

#endif  // LATENTKV_COORDINATOR_KV_INDEX_H_
