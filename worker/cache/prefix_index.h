// The engine's local prefix cache (automatic prefix caching): full pages of
// finished or prefilled sequences stay in the KV pools, indexed by the chained
// block key of the tokens they hold, and later sequences whose prompt starts
// with the same tokens share them instead of recomputing them.
//
// A block is page_size tokens: one page in every (layer, KV head) of the
// cache, all holding the same positions [b * page_size, (b + 1) * page_size).
// Its key is kvstore::ChainKey over (parent key, its tokens), so a key names
// the whole prefix up to the block's end: the same function the coordinator
// uses to find which worker holds a prompt's prefix (kvstore/chain_key.h).
// Only full caches are indexed (every layer and head holding every token in
// order; Insert checks SequenceKv::positions_dense): a compressed sequence's KV
// depends on the whole prompt, so it is never shared.
//
// The index holds one reference on each page of each cached block; Evict()
// drops least-recently-used leaf blocks (blocks no other cached block
// extends) whose pages no sequence shares, so the pages go back to the
// allocators. Every change is recorded as an event (stored / removed keys)
// for the coordinator's router: pending until Publish() numbers them into
// the index's PrefixEventLog, which other threads read.
// Thread-safety: not thread-safe (the engine thread's), except log(), which
// any thread may read.
#ifndef LATENTKV_WORKER_CACHE_PREFIX_INDEX_H_
#define LATENTKV_WORKER_CACHE_PREFIX_INDEX_H_

#include <cstdint>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kvstore/chain_key.h"
#include "worker/cache/kv_cache.h"
#include "worker/cache/prefix_events.h"

namespace latentkv::worker {

class PrefixIndex {
 public:
  // The log keeps at most `max_events` published events (> 0).
  explicit PrefixIndex(KvCache* cache, int64_t max_events = 4096);
  ~PrefixIndex();  // drops the index's page references

  // Tokens of the longest cached prefix of `tokens` (whole blocks), at most
  // `max_tokens`.
  int64_t Match(absl::Span<const int32_t> tokens, int64_t max_tokens) const;
  // Makes `kv` (Init'ed, holding nothing) share the first n tokens of
  // `tokens`, n a multiple of page_size that Match() returned; marks those
  // blocks recently used.
  absl::Status Attach(SequenceKv& kv, absl::Span<const int32_t> tokens,
                      int64_t n);
  // Indexes the full blocks of tokens[0, n) that `kv` holds (a full cache:
  // every (layer, head) positions_dense, no aux pages); blocks already cached
  // are only marked used. Returns the blocks added. A block whose (layer, head)
  // does not hold exactly its positions ends the insertion there.
  int64_t Insert(const SequenceKv& kv, absl::Span<const int32_t> tokens,
                 int64_t n);
  // Removes least-recently-used unshared leaf blocks until `blocks` are gone
  // or none is left; returns how many went. Their pages are freed.
  int64_t Evict(int64_t blocks);
  // Removes every block (all events recorded).
  void Clear();

  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t num_pages() const;  // page references the index holds
  std::vector<BlockKey> Keys() const;
  // Numbers the changes since the last call into log() (consecutive changes
  // of one kind merge into one event).
  void Publish();
  // The published changes and the keys held as of the last Publish().
  // Thread-safe.
  const PrefixEventLog& log() const { return log_; }

 private:
  struct Block {
    BlockKey parent = 0;
    std::vector<int32_t> pages;  // one per (layer, head), layer-major
    int32_t children = 0;        // cached blocks whose parent this is
    std::list<BlockKey>::iterator lru;
  };
  void Touch(Block& b, BlockKey key);
  void Drop(BlockKey key);  // unrefs pages, updates parent, records event
  bool Shared(const Block& b) const;

  KvCache* cache_;
  absl::flat_hash_map<BlockKey, Block> blocks_;
  std::list<BlockKey> lru_;          // front: least recently used
  std::vector<PrefixEvent> events_;  // not yet published
  PrefixEventLog log_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_CACHE_PREFIX_INDEX_H_
