// BlockStore's blocks written in KV-head parts (head_parts.h): held apart
// until whole, then stored through the usual path.
#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kvstore/block_store.h"

namespace latentkv::kvstore {

absl::Status BlockStore::PutPartLocked(
    const KvLayout& layout, const Block& b,
    const absl::flat_hash_set<BlockKey>& pinned, PutResult* result) {
  ExpirePendingLocked();
  // Heads that complete a held block pass through to the resident blocks;
  // others wait in pending room.
  auto held = pending_.find(b.key);
  const bool completes = held != pending_.end() && held->second.CompletedBy(b);
  if (!completes && !MakePendingRoomLocked(b.PayloadBytes(), b.key)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no room to hold KV heads of block ", b.key, " (", b.PayloadBytes(),
        " bytes) until the others arrive: ", pending_bytes_, " of ",
        options_.max_pending_bytes, " pending bytes in use"));
  }
  auto it = pending_.find(b.key);
  if (it == pending_.end()) {
    it = pending_
             .try_emplace(b.key, b, layout.num_layers, layout.num_kv_heads,
                          absl::Now())
             .first;
  }
  int64_t added = 0;
  if (absl::Status s = it->second.Add(b, &added); !s.ok()) return s;
  pending_bytes_ += added;
  // Store the blocks this part completed: this one once its parent is
  // resident, then its held children, depth first.
  std::vector<BlockKey> ready;
  if (it->second.complete() && (b.parent == 0 || entries_.contains(b.parent))) {
    ready.push_back(b.key);
  }
  bool stored_this = false;
  while (!ready.empty()) {
    const BlockKey key = ready.back();
    ready.pop_back();
    auto pit = pending_.find(key);
    if (pit == pending_.end()) continue;
    Block whole = pit->second.Assemble();
    if (!StoreLocked(std::move(whole), pinned)) {
      DropPendingLocked(key);
      ++dropped_pending_;
      return absl::ResourceExhaustedError(
          absl::StrCat("no room to store block ", key, " whole (", bytes_used_,
                       " of ", options_.capacity_bytes, " bytes used)"));
    }
    ++result->stored;
    stored_this = stored_this || key == b.key;
    for (const auto& [k, p] : pending_) {
      if (p.parent() == key && p.complete()) ready.push_back(k);
    }
  }
  if (!stored_this) ++result->pending;
  return absl::OkStatus();
}

void BlockStore::ExpirePendingLocked() {
  const absl::Time now = absl::Now();
  std::vector<BlockKey> old;
  for (const auto& [k, p] : pending_) {
    if (now - p.since() > options_.pending_timeout) old.push_back(k);
  }
  for (BlockKey k : old) {
    DropPendingLocked(k);
    ++dropped_pending_;
  }
}

bool BlockStore::MakePendingRoomLocked(int64_t bytes, BlockKey keep) {
  std::vector<std::pair<absl::Time, BlockKey>> by_age;
  for (const auto& [k, p] : pending_) {
    if (k != keep) by_age.push_back({p.since(), k});
  }
  std::sort(by_age.begin(), by_age.end());
  for (const auto& [since, k] : by_age) {
    if (pending_bytes_ + bytes <= options_.max_pending_bytes) break;
    DropPendingLocked(k);
    ++dropped_pending_;
  }
  return pending_bytes_ + bytes <= options_.max_pending_bytes;
}

void BlockStore::DropPendingLocked(BlockKey key) {
  auto it = pending_.find(key);
  pending_bytes_ -= it->second.bytes();
  pending_.erase(it);
}

}  // namespace latentkv::kvstore
