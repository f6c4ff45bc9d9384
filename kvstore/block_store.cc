#include "kvstore/block_store.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"

namespace latentkv::kvstore {

int64_t Block::PayloadBytes() const {
  int64_t n = 0;
  for (const LayerPayload& l : layers) n += static_cast<int64_t>(l.data.size());
  return n;
}

absl::StatusOr<std::unique_ptr<BlockStore>> BlockStore::Create(
    const Options& options) {
  if (options.capacity_bytes <= 0) {
    return absl::InvalidArgumentError("capacity_bytes must be > 0");
  }
  if (options.max_events == 0) {
    return absl::InvalidArgumentError("max_events must be >= 1");
  }
  if (options.max_blocks == 0) {
    return absl::InvalidArgumentError("max_blocks must be >= 1");
  }
  if (options.max_layer_bytes <= 0) {
    return absl::InvalidArgumentError("max_layer_bytes must be > 0");
  }
  if (options.max_pending_bytes <= 0) {
    return absl::InvalidArgumentError("max_pending_bytes must be > 0");
  }
  if (options.pending_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("pending_timeout must be > 0");
  }
  if (options.layout) {
    if (auto s = ValidateLayout(*options.layout); !s.ok()) return s;
  }
  uint64_t epoch = options.epoch;
  if (epoch == 0) {
    std::random_device rd;
    while (epoch == 0) epoch = (uint64_t{rd()} << 32) ^ rd();
  }
  return std::unique_ptr<BlockStore>(new BlockStore(options, epoch));
}

BlockStore::BlockStore(const Options& options, uint64_t epoch)
    : options_(options), epoch_(epoch) {
  absl::MutexLock lock(&mu_);
  layout_ = options.layout;
}

absl::Status BlockStore::ValidateBlock(const KvLayout& layout, const Block& b,
                                       size_t index) const {
  auto where = [&] {
    return absl::StrCat("block ", index, " (key ", b.key, ")");
  };
  if (b.tokens.size() != layout.block_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(where(), " has ", b.tokens.size(),
                     " tokens, block_tokens is ", layout.block_tokens));
  }
  const BlockKey want =
      ChainKey(b.parent, b.tokens.data(), static_cast<int>(b.tokens.size()));
  if (b.key != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        where(), ": key does not match ChainKey(parent, tokens) = ", want));
  }
  std::vector<bool> seen(layout.num_layers, false);
  for (const LayerPayload& l : b.layers) {
    if (l.layer >= layout.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), ": layer ", l.layer, " >= num_layers ", layout.num_layers));
    }
    if (seen[l.layer]) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), ": layer ", l.layer, " listed twice"));
    }
    seen[l.layer] = true;
    if (!l.present && !l.data.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), ": absent layer ", l.layer, " carries data"));
    }
    if (!l.Intact()) {
      return absl::DataLossError(absl::StrCat(
          where(), ": layer ", l.layer,
          " payload does not match its checksum (corrupt on the way)"));
    }
    if (static_cast<int64_t>(l.data.size()) > options_.max_layer_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), ": layer ", l.layer, " payload of ", l.data.size(),
          " bytes exceeds max_layer_bytes ", options_.max_layer_bytes));
    }
  }
  if (auto s = ValidateHeadRange(b, layout.num_kv_heads, where()); !s.ok()) {
    return s;
  }
  if (b.PayloadBytes() > options_.capacity_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(where(), ": ", b.PayloadBytes(),
                     " payload bytes exceed the store's capacity of ",
                     options_.capacity_bytes));
  }
  return absl::OkStatus();
}

absl::Status BlockStore::CheckLayoutLocked(const KvLayout& layout) const {
  if (!layout_) return ValidateLayout(layout);
  return CheckSameLayout(*layout_, layout);
}

absl::StatusOr<PutResult> BlockStore::Put(const KvLayout& layout,
                                          std::vector<Block> blocks) {
  {
    absl::ReaderMutexLock lock(&mu_);
    if (auto s = CheckLayoutLocked(layout); !s.ok()) return s;
  }
  // Hashing and shape checks outside the lock.
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (auto s = ValidateBlock(layout, blocks[i], i); !s.ok()) return s;
    if (blocks[i].head_begin != blocks[0].head_begin ||
        blocks[i].head_end != blocks[0].head_end) {
      return absl::InvalidArgumentError(
          absl::StrCat("block ", i,
                       " holds other KV heads than block 0: "
                       "one request puts one head range"));
    }
  }
  const bool parts =
      !blocks.empty() && !HoldsAllHeads(blocks[0], layout.num_kv_heads);
  absl::flat_hash_set<BlockKey> pinned;  // parents named by the request
  for (const Block& b : blocks) {
    if (b.parent != 0) pinned.insert(b.parent);
  }

  absl::MutexLock lock(&mu_);
  if (auto s = CheckLayoutLocked(layout); !s.ok()) return s;
  {
    absl::flat_hash_set<BlockKey> earlier;
    for (size_t i = 0; i < blocks.size(); ++i) {
      const Block& b = blocks[i];
      if (b.parent != 0 && !entries_.contains(b.parent) &&
          !earlier.contains(b.parent) &&
          !(parts && pending_.contains(b.parent))) {
        return absl::FailedPreconditionError(
            absl::StrCat("block ", i, " (key ", b.key, "): parent ", b.parent,
                         " is not resident; put the chain from its first "
                         "missing block"));
      }
      earlier.insert(b.key);
    }
  }
  if (!layout_) layout_ = layout;

  PutResult result;
  absl::Status status;
  for (size_t i = 0; i < blocks.size() && status.ok(); ++i) {
    auto it = entries_.find(blocks[i].key);
    if (it != entries_.end()) {
      TouchLocked(it->first, it->second);
      ++result.duplicates;
      continue;
    }
    if (parts) {
      status = PutPartLocked(layout, blocks[i], pinned, &result);
      continue;
    }
    const int64_t bytes = blocks[i].PayloadBytes();
    if (!StoreLocked(std::move(blocks[i]), pinned)) {
      status = absl::ResourceExhaustedError(absl::StrCat(
          "no room for block ", i, " (", bytes, " bytes; ", bytes_used_, " of ",
          options_.capacity_bytes, " bytes used, ", entries_.size(),
          " blocks) without evicting the request's own chains; ", result.stored,
          " blocks stored"));
      break;
    }
    ++result.stored;
  }
  events_cv_.SignalAll();
  stored_ += result.stored;
  duplicates_ += result.duplicates;
  if (!status.ok()) return status;
  return result;
}

bool BlockStore::StoreLocked(Block b,
                             const absl::flat_hash_set<BlockKey>& pinned) {
  if (pending_.contains(b.key)) DropPendingLocked(b.key);
  b.head_begin = b.head_end = 0;
  const int64_t bytes = b.PayloadBytes();
  if (!MakeRoomLocked(bytes, pinned)) return false;
  InsertLocked(std::make_shared<const Block>(std::move(b)), bytes);
  return true;
}

void BlockStore::TouchLocked(BlockKey key, Entry& e) {
  const bool leaf = e.children == 0;
  if (leaf) leaves_.erase({e.last_use, key});
  e.last_use = ++tick_;
  if (leaf) leaves_.insert({e.last_use, key});
}

bool BlockStore::MakeRoomLocked(int64_t bytes,
                                const absl::flat_hash_set<BlockKey>& pinned) {
  auto it = leaves_.begin();
  while (bytes_used_ + bytes > options_.capacity_bytes ||
         entries_.size() + 1 > options_.max_blocks) {
    while (it != leaves_.end() && pinned.contains(it->second)) ++it;
    if (it == leaves_.end()) return false;
    const BlockKey victim = it->second;
    // Evicting may turn the victim's parent into a leaf, possibly one older
    // than `it`: restart from the oldest leaf.
    EvictLocked(victim);
    it = leaves_.begin();
  }
  return true;
}

void BlockStore::EvictLocked(BlockKey key) {
  auto it = entries_.find(key);
  Entry& e = it->second;
  leaves_.erase({e.last_use, key});
  const BlockKey parent = e.block->parent;
  const int64_t bytes = e.bytes;
  bytes_used_ -= bytes;
  entries_.erase(it);
  ++evicted_blocks_;
  evicted_bytes_ += bytes;
  if (parent != 0) {
    auto pit = entries_.find(parent);
    if (pit != entries_.end() && --pit->second.children == 0) {
      leaves_.insert({pit->second.last_use, parent});
    }
  }
  EmitLocked(EventKind::kRemoved, key, parent, bytes);
}

void BlockStore::InsertLocked(std::shared_ptr<const Block> block,
                              int64_t bytes) {
  const BlockKey key = block->key;
  const BlockKey parent = block->parent;
  if (parent != 0) {
    Entry& p = entries_.at(parent);
    if (p.children++ == 0) leaves_.erase({p.last_use, parent});
  }
  Entry e;
  e.block = std::move(block);
  e.bytes = bytes;
  e.last_use = ++tick_;
  e.order = e.last_use;
  leaves_.insert({e.last_use, key});
  entries_.emplace(key, std::move(e));
  bytes_used_ += bytes;
  EmitLocked(EventKind::kStored, key, parent, bytes);
}

void BlockStore::EmitLocked(EventKind kind, BlockKey key, BlockKey parent,
                            int64_t bytes) {
  Event ev;
  ev.seq = ++seq_;
  ev.kind = kind;
  ev.key = key;
  ev.parent = parent;
  ev.bytes = bytes;
  events_.push_back(ev);
  while (events_.size() > options_.max_events) events_.pop_front();
}

absl::StatusOr<LookupResult> BlockStore::Lookup(
    const KvLayout& layout, absl::Span<const BlockKey> keys) const {
  absl::ReaderMutexLock lock(&mu_);
  LookupResult r;
  if (layout_) {
    if (auto s = CheckSameLayout(*layout_, layout); !s.ok()) return s;
  }
  for (BlockKey k : keys) {
    if (!layout_) break;
    auto it = entries_.find(k);
    if (it == entries_.end()) break;
    ++r.num_hits;
    r.bytes += it->second.bytes;
  }
  lookup_hits_ += r.num_hits;
  lookup_misses_ += static_cast<int64_t>(keys.size()) - r.num_hits;
  return r;
}

absl::StatusOr<std::vector<std::shared_ptr<const Block>>> BlockStore::Get(
    const KvLayout& layout, absl::Span<const BlockKey> keys,
    uint32_t head_begin, uint32_t head_end) {
  std::vector<std::shared_ptr<const Block>> out;
  {
    absl::MutexLock lock(&mu_);
    if (layout_) {
      if (auto s = CheckSameLayout(*layout_, layout); !s.ok()) return s;
    }
    if (absl::Status s =
            CheckHeadRange(head_begin, head_end, layout.num_kv_heads, "Get");
        !s.ok()) {
      return s;
    }
    for (BlockKey k : keys) {
      if (!layout_) break;
      auto it = entries_.find(k);
      if (it == entries_.end()) break;
      TouchLocked(k, it->second);
      out.push_back(it->second.block);
    }
    get_hits_ += static_cast<int64_t>(out.size());
    get_misses_ += static_cast<int64_t>(keys.size() - out.size());
  }
  // Slicing copies: outside the lock (resident blocks are immutable).
  if (!IsEveryHead(head_begin, head_end, layout.num_kv_heads)) {
    for (auto& b : out) {
      b = std::make_shared<const Block>(
          SliceHeads(*b, layout.num_kv_heads, head_begin, head_end));
    }
  }
  return out;
}

absl::StatusOr<std::vector<Event>> BlockStore::EventsAfterLocked(
    uint64_t after_seq, uint64_t epoch, size_t max) const {
  if (epoch != 0 && epoch != epoch_) {
    return absl::OutOfRangeError(
        absl::StrCat("epoch ", epoch, " is not this store's (", epoch_,
                     "): it restarted; take a Snapshot"));
  }
  if (after_seq > seq_) {
    return absl::OutOfRangeError(absl::StrCat("from_seq ", after_seq,
                                              " is beyond the newest event ",
                                              seq_, "; take a Snapshot"));
  }
  const uint64_t oldest = seq_ - events_.size() + 1;  // seq of events_[0]
  if (after_seq + 1 < oldest) {
    return absl::OutOfRangeError(absl::StrCat("events after ", after_seq,
                                              " left the ring (oldest kept ",
                                              oldest, "); take a Snapshot"));
  }
  std::vector<Event> out;
  for (size_t i = after_seq + 1 - oldest;
       i < events_.size() && out.size() < max; ++i) {
    out.push_back(events_[i]);
  }
  return out;
}

absl::StatusOr<std::vector<Event>> BlockStore::EventsAfter(
    uint64_t after_seq, uint64_t epoch, size_t max_events) const {
  absl::ReaderMutexLock lock(&mu_);
  return EventsAfterLocked(after_seq, epoch, max_events);
}

absl::StatusOr<std::vector<Event>> BlockStore::WaitForEvents(
    uint64_t after_seq, uint64_t epoch, size_t max_events,
    absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  bool timed_out = false;
  for (;;) {
    if (closed_) return absl::UnavailableError("kvstore is shutting down");
    // Range and epoch are checked before waiting: a reader that is ahead or
    // on another incarnation hears so at once.
    auto events = EventsAfterLocked(after_seq, epoch, max_events);
    if (!events.ok() || !events->empty() || timed_out) return events;
    timed_out = events_cv_.WaitWithDeadline(&mu_, deadline);
  }
}

StoreSnapshot BlockStore::Snapshot() const {
  absl::ReaderMutexLock lock(&mu_);
  StoreSnapshot s;
  s.seq = seq_;
  s.epoch = epoch_;
  s.layout = layout_;
  s.bytes_used = bytes_used_;
  s.capacity_bytes = options_.capacity_bytes;
  std::vector<std::pair<uint64_t, SnapshotEntry>> order;
  order.reserve(entries_.size());
  for (const auto& [key, e] : entries_) {
    order.push_back({e.order, SnapshotEntry{key, e.block->parent, e.bytes}});
  }
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  s.blocks.reserve(order.size());
  for (auto& [o, entry] : order) s.blocks.push_back(entry);
  return s;
}

void BlockStore::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  events_cv_.SignalAll();
}

BlockStoreStats BlockStore::stats() const {
  BlockStoreStats st;
  {
    absl::ReaderMutexLock lock(&mu_);
    st.blocks = static_cast<int64_t>(entries_.size());
    st.bytes_used = bytes_used_;
    st.pending_blocks = static_cast<int64_t>(pending_.size());
    st.pending_bytes = pending_bytes_;
  }
  st.capacity_bytes = options_.capacity_bytes;
  st.stored_blocks = stored_.load();
  st.duplicate_blocks = duplicates_.load();
  st.lookup_hit_blocks = lookup_hits_.load();
  st.lookup_miss_blocks = lookup_misses_.load();
  st.get_hit_blocks = get_hits_.load();
  st.get_miss_blocks = get_misses_.load();
  st.evicted_blocks = evicted_blocks_.load();
  st.evicted_bytes = evicted_bytes_.load();
  st.dropped_pending_blocks = dropped_pending_.load();
  return st;
}

bool BlockStore::Contains(BlockKey key) const {
  absl::ReaderMutexLock lock(&mu_);
  return entries_.contains(key);
}

int64_t BlockStore::bytes_used() const {
  absl::ReaderMutexLock lock(&mu_);
  return bytes_used_;
}

size_t BlockStore::num_blocks() const {
  absl::ReaderMutexLock lock(&mu_);
  return entries_.size();
}

uint64_t BlockStore::last_seq() const {
  absl::ReaderMutexLock lock(&mu_);
  return seq_;
}

}  // namespace latentkv::kvstore
