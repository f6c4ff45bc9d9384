#include "worker/cache/prefix_index.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace latentkv::worker {

PrefixIndex::PrefixIndex(KvCache* cache, int64_t max_events)
    : cache_(cache), log_(cache->page_size(), max_events) {}

PrefixIndex::~PrefixIndex() { Clear(); }

int64_t PrefixIndex::Match(absl::Span<const int32_t> tokens,
                           int64_t max_tokens) const {
  const int32_t ps = cache_->page_size();
  const int64_t limit = std::min<int64_t>(max_tokens, tokens.size());
  BlockKey key = 0;
  int64_t n = 0;
  while (n + ps <= limit) {
    key = kvstore::ChainKey(key, tokens.data() + n, ps);
    if (!blocks_.contains(key)) break;
    n += ps;
  }
  return n;
}

absl::Status PrefixIndex::Attach(SequenceKv& kv,
                                 absl::Span<const int32_t> tokens, int64_t n) {
  const int32_t ps = cache_->page_size();
  if (n % ps != 0 || n > static_cast<int64_t>(tokens.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("PrefixIndex::Attach: ", n, " tokens"));
  }
  BlockKey key = 0;
  for (int64_t at = 0; at < n; at += ps) {
    key = kvstore::ChainKey(key, tokens.data() + at, ps);
    auto it = blocks_.find(key);
    if (it == blocks_.end()) {
      return absl::NotFoundError("PrefixIndex::Attach: block not cached");
    }
    absl::Status st = kv.AppendSharedBlock(*cache_, it->second.pages);
    if (!st.ok()) return st;
    Touch(it->second, key);
  }
  return absl::OkStatus();
}

int64_t PrefixIndex::Insert(const SequenceKv& kv,
                            absl::Span<const int32_t> tokens, int64_t n) {
  const int32_t ps = cache_->page_size();
  n = std::min<int64_t>(n, tokens.size());
  BlockKey key = 0;
  int64_t added = 0;
  std::vector<BlockKey> stored;
  for (int64_t b = 0; (b + 1) * ps <= n; ++b) {
    const BlockKey parent = key;
    key = kvstore::ChainKey(parent, tokens.data() + b * ps, ps);
    if (auto it = blocks_.find(key); it != blocks_.end()) {
      Touch(it->second, key);
      continue;
    }
    Block block;
    block.parent = parent;
    bool full = true;
    for (int32_t l = 0; full && l < cache_->num_layers(); ++l) {
      for (int32_t h = 0; full && h < cache_->shape(l).n_kv_heads; ++h) {
        // A block must hold positions b * ps .. b * ps + ps - 1 as appended:
        // the page table knows without reading the pool.
        if (kv.num_tokens(l, h) < (b + 1) * ps || kv.aux(l, h).tokens != 0 ||
            !kv.positions_dense(l, h)) {
          full = false;
          break;
        }
        block.pages.push_back(kv.page_at(l, h, b));
      }
    }
    if (!full) break;
    for (int32_t l = 0, i = 0; l < cache_->num_layers(); ++l) {
      for (int32_t h = 0; h < cache_->shape(l).n_kv_heads; ++h) {
        cache_->allocator(l).Ref(block.pages[i++]);
      }
    }
    if (parent != 0) ++blocks_[parent].children;
    lru_.push_back(key);
    block.lru = std::prev(lru_.end());
    blocks_.emplace(key, std::move(block));
    stored.push_back(key);
    ++added;
  }
  if (!stored.empty()) {
    if (!events_.empty() && events_.back().stored) {
      events_.back().keys.insert(events_.back().keys.end(), stored.begin(),
                                 stored.end());
    } else {
      events_.push_back({true, std::move(stored)});
    }
  }
  return added;
}

bool PrefixIndex::Shared(const Block& b) const {
  for (int32_t l = 0, i = 0; l < cache_->num_layers(); ++l) {
    for (int32_t h = 0; h < cache_->shape(l).n_kv_heads; ++h) {
      if (cache_->allocator(l).refcount(b.pages[i++]) > 1) return true;
    }
  }
  return false;
}

int64_t PrefixIndex::Evict(int64_t blocks) {
  int64_t gone = 0;
  auto it = lru_.begin();
  while (gone < blocks && it != lru_.end()) {
    const BlockKey key = *it;
    const Block& b = blocks_.at(key);
    if (b.children > 0 || Shared(b)) {
      ++it;
      continue;
    }
    // A parent that becomes a leaf may be evicted in this same pass: restart
    // from the least recently used end.
    Drop(key);
    ++gone;
    it = lru_.begin();
  }
  return gone;
}

void PrefixIndex::Clear() {
  // Leaves first, so every drop keeps the parent counts right.
  while (!blocks_.empty()) {
    std::vector<BlockKey> leaves;
    for (const auto& [key, b] : blocks_) {
      if (b.children == 0) leaves.push_back(key);
    }
    for (BlockKey key : leaves) Drop(key);
  }
}

void PrefixIndex::Touch(Block& b, BlockKey key) {
  lru_.erase(b.lru);
  lru_.push_back(key);
  b.lru = std::prev(lru_.end());
}

void PrefixIndex::Drop(BlockKey key) {
  auto it = blocks_.find(key);
  Block& b = it->second;
  for (int32_t l = 0, i = 0; l < cache_->num_layers(); ++l) {
    for (int32_t h = 0; h < cache_->shape(l).n_kv_heads; ++h) {
      cache_->allocator(l).Unref(b.pages[i++]);
    }
  }
  if (b.parent != 0) {
    if (auto p = blocks_.find(b.parent); p != blocks_.end()) {
      --p->second.children;
    }
  }
  lru_.erase(b.lru);
  blocks_.erase(it);
  if (!events_.empty() && !events_.back().stored) {
    events_.back().keys.push_back(key);
  } else {
    events_.push_back({false, {key}});
  }
}

int64_t PrefixIndex::num_pages() const {
  int64_t n = 0;
  for (const auto& [key, b] : blocks_) n += b.pages.size();
  return n;
}

std::vector<BlockKey> PrefixIndex::Keys() const {
  std::vector<BlockKey> keys;
  keys.reserve(blocks_.size());
  for (const auto& [key, b] : blocks_) keys.push_back(key);
  return keys;
}

void PrefixIndex::Publish() {
  std::vector<PrefixEvent> out;
  out.swap(events_);
  log_.Append(std::move(out));
}

}  // namespace latentkv::worker
