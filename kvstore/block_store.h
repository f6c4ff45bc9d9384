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
//    kept in a ring;
//  - blocks written in KV-head parts are held apart until whole (pending,
//    at most max_pending_bytes): Lookup, Get, Snapshot and events see only
//    whole resident blocks, never a block with heads missing.
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
#include "kvstore/block.h"
#include "kvstore/chain_key.h"
#include "kvstore/head_parts.h"
#include "kvstore/layout.h"

namespace latentkv::kvstore {

enum class EventKind { kStored = 1, kRemoved = 2 };

struct Event {
  uint64_t seq = 0;  // 1, 2, 3, ...
  EventKind kind = EventKind::kStored;
  BlockKey key = 0;
  BlockKey parent = 0;
  int64_t bytes = 0;  // the block's payload bytes
};

struct PutResult {
  int stored = 0;      // newly stored (blocks a head part completed too)
  int duplicates = 0;  // already resident (refreshed)
  int pending = 0;     // head parts held until their block's other heads come
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
  // Blocks written in head parts that are not whole yet (not resident).
  int64_t pending_blocks = 0;          // now
  int64_t pending_bytes = 0;           // now
  int64_t dropped_pending_blocks = 0;  // timed out, pushed out or refused
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
    // Bound on the payload bytes of blocks whose head parts have not all
    // arrived (kvstore/head_parts.h), apart from capacity_bytes; > 0.
    // Default 256 MiB. Beyond it the oldest incomplete blocks are dropped.
    int64_t max_pending_bytes = int64_t{256} << 20;
    // An incomplete block older than this is dropped (its writers died or
    // gave up); > 0. Default 30 s.
    absl::Duration pending_timeout = absl::Seconds(30);
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
  // resident or come earlier in `blocks` (for head parts: or be held
  // incomplete); while the request runs, the parents it names are never
  // evicted. Blocks of one request hold the same KV-head range. A head part
  // (Block::head_begin/head_end) is held apart, bounded by
  // max_pending_bytes and pending_timeout, until its block's every head has
  // arrived and its parent is resident: then the block is stored whole (a
  // STORED event) and so are its held children. Errors (nothing stored
  // unless said):
  //  - FAILED_PRECONDITION: layout differs from the store's (names the
  //    field), or a parent is not resident;
  //  - INVALID_ARGUMENT: invalid layout, token count != block_tokens, key !=
  //    ChainKey(parent, tokens), layer index >= num_layers or repeated, an
  //    absent layer with data, a layer payload over max_layer_bytes, a head
  //    range outside num_kv_heads, payloads that do not split into its
  //    heads, or blocks of one request with different head ranges;
  //  - FAILED_PRECONDITION also: a head part that disagrees with the heads
  //    already held (layers present, bytes per head): the blocks before it
  //    stay stored or held;
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
  // they are evicted. Layout rules as Lookup. With a head range [head_begin,
  // head_end) other than 0..0 (every head), each block holds those KV heads
  // only (head_parts.h SliceHeads); INVALID_ARGUMENT for a range outside
  // num_kv_heads.
  absl::StatusOr<std::vector<std::shared_ptr<const Block>>> Get(
      const KvLayout& layout, absl::Span<const BlockKey> keys,
      uint32_t head_begin = 0, uint32_t head_end = 0);

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
  // Stores whole block `b` (its parent resident or 0) once room is made
  // (false: no room without evicting `pinned`); drops a held part of it.
  bool StoreLocked(Block b, const absl::flat_hash_set<BlockKey>& pinned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes head part `b` (its block not resident) into pending_; stores
  // what it completes. Adds to *result.
  absl::Status PutPartLocked(const KvLayout& layout, const Block& b,
                             const absl::flat_hash_set<BlockKey>& pinned,
                             PutResult* result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops held blocks older than pending_timeout.
  void ExpirePendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the oldest held blocks but `keep` until `bytes` more fit under
  // max_pending_bytes; false when they cannot.
  bool MakePendingRoomLocked(int64_t bytes, BlockKey keep)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropPendingLocked(BlockKey key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const uint64_t epoch_;

  mutable absl::Mutex mu_;
  absl::CondVar events_cv_;  // signalled on new events and on Close()
  std::optional<KvLayout> layout_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<BlockKey, Entry> entries_ ABSL_GUARDED_BY(mu_);
  // (last_use, key) of every resident block without resident children.
  std::set<std::pair<uint64_t, BlockKey>> leaves_ ABSL_GUARDED_BY(mu_);
  int64_t bytes_used_ ABSL_GUARDED_BY(mu_) = 0;
  // Blocks written in head parts, not whole yet; apart from entries_.
  absl::flat_hash_map<BlockKey, PartialBlock> pending_ ABSL_GUARDED_BY(mu_);
  int64_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t tick_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;          // newest event's seq
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);  // seq_-size+1 .. seq_
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Counters (Lookup runs under a shared lock, hence atomics).
  mutable std::atomic<int64_t> lookup_hits_{0}, lookup_misses_{0};
  std::atomic<int64_t> get_hits_{0}, get_misses_{0}, stored_{0}, duplicates_{0},
      evicted_blocks_{0}, evicted_bytes_{0}, dropped_pending_{0};
};

}  // namespace latentkv::kvstore

#endif  // LATENTKV_KVSTORE_BLOCK_STORE_H_
