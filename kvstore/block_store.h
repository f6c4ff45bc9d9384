// The kvstore's core: a capacity-bounded map of KV blocks keyed by chain keys
// (kvstore/chain_key.h), with leaf-first LRU eviction and an event feed.
// Plain C++ (no gRPC): kvstore_service.h puts it on the wire.
//
// Invariants (hold whenever the mutex is free):
//  - every resident block's parent (if non-zero) is resident, so every
//    resident block's whole chain is resident;
//  - bytes_used() = sum of resident blocks' payload bytes <= capacity_bytes,
//    and num_blocks() <= max_blocks;
//  - only leaves (blocks without resident children) are evicted, least
//    recently used first, so a block never leaves before its descendants;
//  - events carry seq 1, 2, 3, ... without gaps; the newest max_events are
//    kept in a ring.
// "Use" means stored or returned by Get (refreshed parents first, so a chain's
// deeper blocks are newer); Lookup is a probe and does not count as use.
//
// Thread-safety: all methods are thread-safe (one mutex).
#ifndef LATENTKV_KVSTORE_BLOCK_STORE_H_
#define LATENTKV_KVSTORE_BLOCK_STORE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kvstore/chain_key.h"
#include "kvstore/layout.h"

namespace latentkv::kvstore {

// One layer's pages of one block, in the layout's codec (opaque bytes here).
struct LayerPayload {
  uint32_t layer = 0;    // < num_layers, unique within a block
  bool present = false;  // false: dropped by a residency policy; data empty
  std::string data;
  uint64_t checksum = 0;  // PayloadChecksum(data) (chain_key.h); checked
                          // by Put and by readers
  // Sets checksum from data.
  void Seal() { checksum = PayloadChecksum(data.data(), data.size()); }
  bool Intact() const {
    return checksum == PayloadChecksum(data.data(), data.size());
  }
};

struct Block {
  BlockKey key = 0;                  // == ChainKey(parent, tokens)
  BlockKey parent = 0;               // 0 for a prompt's first block
  std::vector<int32_t> tokens;       // [block_tokens]
  std::vector<LayerPayload> layers;  // any order; unlisted layers are absent

  // Sum of the layers' data sizes: what the capacity counts.
  int64_t PayloadBytes() const;
};

enum class EventKind { kStored = 1, kRemoved = 2 };

struct Event {
  uint64_t seq = 0;  // 1, 2, 3, ...
  EventKind kind = EventKind::kStored;
  BlockKey key = 0;
  BlockKey parent = 0;
  int64_t bytes = 0;  // the block's payload bytes
};

struct PutResult {
  int stored = 0;      // newly stored
  int duplicates = 0;  // already resident (refreshed)
};

struct LookupResult {
  int num_hits = 0;   // leading keys resident
  int64_t bytes = 0;  // their payload bytes
};

struct SnapshotEntry {
  BlockKey key = 0;
  BlockKey parent = 0;
  int64_t bytes = 0;
};

// What the store holds now and counters since it started (latentkv-kvstore
// exports them as Prometheus metrics). Hits and misses count block keys:
// a Lookup or Get of k keys whose leading h are resident counts h hits and
// k - h misses (a store without a layout: k misses).
struct BlockStoreStats {
  int64_t blocks = 0;            // resident now
  int64_t bytes_used = 0;        // resident payload bytes now
  int64_t capacity_bytes = 0;    // Options::capacity_bytes
  int64_t stored_blocks = 0;     // newly stored by Put
  int64_t duplicate_blocks = 0;  // Put blocks already resident
  int64_t lookup_hit_blocks = 0, lookup_miss_blocks = 0;
  int64_t get_hit_blocks = 0, get_miss_blocks = 0;
  int64_t evicted_blocks = 0;  // removed for room (leaf LRU)
  int64_t evicted_bytes = 0;
};

struct StoreSnapshot {
  uint64_t seq = 0;                   // last event reflected (0: none)
  uint64_t epoch = 0;                 // this store's incarnation
  std::vector<SnapshotEntry> blocks;  // parents before children
  std::optional<KvLayout> layout;     // unset until fixed
  int64_t bytes_used = 0;
  int64_t capacity_bytes = 0;
};

class BlockStore {
 public:
  struct Options {
    // Bound on resident payload bytes; > 0. Default 1 GiB.
    int64_t capacity_bytes = int64_t{1} << 30;
    // Events kept for Subscribe; >= 1. Default 65536.
    size_t max_events = 65536;
    // Bound on resident blocks (bounds metadata when payloads are small or
    // absent); >= 1. Default 2^20.
    size_t max_blocks = size_t{1} << 20;
    // Bound on one layer payload of one block; > 0. Default 64 MiB.
    int64_t max_layer_bytes = int64_t{64} << 20;
    // The store's layout; unset (default): the first successful Put fixes it.
    std::optional<KvLayout> layout;
    // Incarnation id reported by Snapshot and checked by event readers;
    // 0 (default): a random non-zero value.
    uint64_t epoch = 0;
  };

  // INVALID_ARGUMENT for options outside their documented ranges.
  static absl::StatusOr<std::unique_ptr<BlockStore>> Create(
      const Options& options);

  // Validates, then stores `blocks` in order. A block's parent must be
  // resident or come earlier in `blocks`; while the request runs, the
  // parents it names are never evicted. Errors (nothing stored unless said):
  //  - FAILED_PRECONDITION: layout differs from the store's (names the
  //    field), or a parent is not resident;
  //  - INVALID_ARGUMENT: invalid layout, token count != block_tokens, key !=
  //    ChainKey(parent, tokens), layer index >= num_layers or repeated, an
  //    absent layer with data, a layer payload over max_layer_bytes;
  //  - RESOURCE_EXHAUSTED: a block larger than capacity_bytes; or no room
  //    for block i without evicting the request's own chains (blocks before
  //    i stay stored).
  absl::StatusOr<PutResult> Put(const KvLayout& layout,
                                std::vector<Block> blocks);

  // The longest resident prefix of `keys`. A store without a layout has no
  // blocks (0 hits); otherwise a differing layout is FAILED_PRECONDITION.
  absl::StatusOr<LookupResult> Lookup(const KvLayout& layout,
                                      absl::Span<const BlockKey> keys) const;

  // The blocks of the longest resident prefix of `keys`, in order, marked
  // used. Blocks are immutable and shared: the caller may read them after
  // they are evicted. Layout rules as Lookup.
  absl::StatusOr<std::vector<std::shared_ptr<const Block>>> Get(
      const KvLayout& layout, absl::Span<const BlockKey> keys);

  // Up to max_events events with seq > after_seq (none when the store has
  // nothing newer). OUT_OF_RANGE when some of them have left the ring, when
  // after_seq is beyond the newest event, or when epoch != 0 differs from
  // this store's epoch: the reader must take a Snapshot.
  absl::StatusOr<std::vector<Event>> EventsAfter(uint64_t after_seq,
                                                 uint64_t epoch,
                                                 size_t max_events) const;
  // As EventsAfter, but first waits until an event with seq > after_seq
  // exists, `deadline` passes (then returns none) or Close() is called (then
  // UNAVAILABLE).
  absl::StatusOr<std::vector<Event>> WaitForEvents(uint64_t after_seq,
                                                   uint64_t epoch,
                                                   size_t max_events,
                                                   absl::Time deadline);

  // Every resident block (parents before children) with the current seq.
  StoreSnapshot Snapshot() const;

  // Wakes and ends every WaitForEvents (now and later) with UNAVAILABLE.
  // Other operations keep working.
  void Close();

  bool Contains(BlockKey key) const;
  BlockStoreStats stats() const;
  int64_t bytes_used() const;
  size_t num_blocks() const;
  uint64_t last_seq() const;
  uint64_t epoch() const { return epoch_; }
  const Options& options() const { return options_; }

 private:
  struct Entry {
    std::shared_ptr<const Block> block;
    int64_t bytes = 0;
    uint32_t children = 0;  // resident blocks whose parent is this one
    uint64_t last_use = 0;  // tick of the last use
    uint64_t order = 0;     // tick of insertion (parents before children)
  };

  BlockStore(const Options& options, uint64_t epoch);

  // Static checks of one block against `layout` (no lock needed).
  absl::Status ValidateBlock(const KvLayout& layout, const Block& b,
                             size_t index) const;
  // Refuses a layout that differs from the fixed one.
  absl::Status CheckLayoutLocked(const KvLayout& layout) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<Event>> EventsAfterLocked(uint64_t after_seq,
                                                       uint64_t epoch,
                                                       size_t max) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Evicts LRU leaves outside `pinned` until `bytes` more payload and one
  // more block fit; false when that is impossible (what was evicted stays
  // evicted).
  bool MakeRoomLocked(int64_t bytes,
                      const absl::flat_hash_set<BlockKey>& pinned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictLocked(BlockKey key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InsertLocked(std::shared_ptr<const Block> block, int64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TouchLocked(BlockKey key, Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EmitLocked(EventKind kind, BlockKey key, BlockKey parent, int64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const uint64_t epoch_;

  mutable absl::Mutex mu_;
  absl::CondVar events_cv_;  // signalled on new events and on Close()
  std::optional<KvLayout> layout_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<BlockKey, Entry> entries_ ABSL_GUARDED_BY(mu_);
  // (last_use, key) of every resident block without resident children.
  std::set<std::pair<uint64_t, BlockKey>> leaves_ ABSL_GUARDED_BY(mu_);
  int64_t bytes_used_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t tick_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;          // newest event's seq
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);  // seq_-size+1 .. seq_
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Counters (Lookup runs under a shared lock, hence atomics).
  mutable std::atomic<int64_t> lookup_hits_{0}, lookup_misses_{0};
  std::atomic<int64_t> get_hits_{0}, get_misses_{0}, stored_{0}, duplicates_{0},
      evicted_blocks_{0}, evicted_bytes_{0};
};

}  // namespace latentkv::kvstore

#endif  // LATENTKV_KVSTORE_BLOCK_STORE_H_
