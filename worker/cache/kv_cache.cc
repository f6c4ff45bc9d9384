#include "worker/cache/kv_cache.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace latentkv::worker {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// ---------------------------------------------------------------------------
// BlockAllocator

BlockAllocator::BlockAllocator(int32_t num_pages) {
  LATENTKV_CHECK(num_pages >= 0, "negative page count ", num_pages);
  refcount_.assign(num_pages, 0);
  free_.resize(num_pages);
  // Ascending ids form a valid min-heap.
  for (int32_t i = 0; i < num_pages; ++i) free_[i] = i;
}

std::optional<int32_t> BlockAllocator::Allocate() {
  if (free_.empty()) return std::nullopt;
  std::pop_heap(free_.begin(), free_.end(), std::greater<int32_t>());
  const int32_t page = free_.back();
  free_.pop_back();
  refcount_[page] = 1;
  return page;
}

void BlockAllocator::Ref(int32_t page) {
  LATENTKV_CHECK(page >= 0 && page < num_pages(), "BlockAllocator::Ref: page ",
                 page, " out of range [0, ", num_pages(), ")");
  LATENTKV_CHECK(refcount_[page] > 0, "BlockAllocator::Ref of free page ",
                 page);
  ++refcount_[page];
}

void BlockAllocator::Unref(int32_t page) {
  LATENTKV_CHECK(page >= 0 && page < num_pages(),
                 "BlockAllocator::Unref: page ", page, " out of range [0, ",
                 num_pages(), ")");
  LATENTKV_CHECK(refcount_[page] > 0, "BlockAllocator::Unref of free page ",
                 page);
  if (--refcount_[page] == 0) {
    free_.push_back(page);
    std::push_heap(free_.begin(), free_.end(), std::greater<int32_t>());
  }
}

// ---------------------------------------------------------------------------
// KvCache

namespace {

// A page is page_size slots of one KV row each (position, K, V).
int64_t PageBytes(const LayerKvShape& s, int32_t page_size, DType dtype) {
  return int64_t{page_size} * KvRowBytes(dtype, s.d_qk, s.d_vo);
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(
    std::vector<LayerKvShape> layers, const KvCacheOptions& options) {
  if (options.page_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCache: page_size must be > 0, got ", options.page_size));
  }
  if (options.max_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCache: max_bytes must be > 0, got ", options.max_bytes));
  }
  if (layers.empty()) {
    return absl::InvalidArgumentError("KvCache: no layers");
  }
  if (!IsKvDType(options.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCache: KV dtype must be f32, bf16, f16 or fp8_e4m3, got ",
        std::string(DTypeName(options.dtype))));
  }
  // Bytes of one "page per (layer, head)" round: sum_l n_kv(l) * page_bytes(l).
  int64_t round_bytes = 0;
  int32_t max_heads = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerKvShape& s = layers[l];
    if (s.n_kv_heads <= 0 || s.d_qk <= 0 || s.d_vo <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KvCache: layer ", l, " has invalid shape n_kv_heads=", s.n_kv_heads,
          " d_qk=", s.d_qk, " d_vo=", s.d_vo, " (all must be > 0)"));
    }
    const int64_t pb = PageBytes(s, options.page_size, options.dtype);
    if (pb > std::numeric_limits<int64_t>::max() / s.n_kv_heads ||
        round_bytes > std::numeric_limits<int64_t>::max() - pb * s.n_kv_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("KvCache: page sizes overflow at layer ", l));
    }
    round_bytes += pb * s.n_kv_heads;
    max_heads = std::max(max_heads, s.n_kv_heads);
  }
  int64_t pages_per_head = options.max_bytes / round_bytes;
  if (pages_per_head < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache: max_bytes=", options.max_bytes,
                     " cannot hold one page per (layer, KV head), which needs ",
                     round_bytes, " bytes with page_size=", options.page_size));
  }
  // Page ids are int32: stay within that (still within the byte bound).
  pages_per_head = std::min<int64_t>(
      pages_per_head, std::numeric_limits<int32_t>::max() / max_heads);

  auto cache = std::unique_ptr<KvCache>(new KvCache());
  cache->page_size_ = options.page_size;
  cache->dtype_ = options.dtype;
  cache->layers_ = std::move(layers);
  const size_t n = cache->layers_.size();
  cache->allocators_.reserve(n);
  for (size_t l = 0; l < n; ++l) {
    const int64_t pages = pages_per_head * cache->layers_[l].n_kv_heads;
    cache->allocators_.emplace_back(static_cast<int32_t>(pages));
  }
  return cache;
}

int64_t KvCache::page_bytes(int32_t layer) const {
  return PageBytes(layers_[layer], page_size_, dtype_);
}

int64_t KvCache::pages_in_use() const {
  int64_t total = 0;
  for (const BlockAllocator& a : allocators_) {
    total += a.num_pages() - a.num_free();
  }
  return total;
}

int64_t KvCache::bytes_in_use() const {
  int64_t total = 0;
  for (int32_t l = 0; l < num_layers(); ++l) {
    const BlockAllocator& a = allocators_[l];
    total += int64_t{a.num_pages() - a.num_free()} * page_bytes(l);
  }
  return total;
}

int64_t KvCache::layer_bytes_in_use(int32_t layer) const {
  const BlockAllocator& a = allocators_[layer];
  return int64_t{a.num_pages() - a.num_free()} * page_bytes(layer);
}

int64_t KvCache::capacity_bytes() const {
  int64_t total = 0;
  for (int32_t l = 0; l < num_layers(); ++l) {
    total += int64_t{allocators_[l].num_pages()} * page_bytes(l);
  }
  return total;
}

// ---------------------------------------------------------------------------
// SequenceKv

void SequenceKv::Init(const KvCache& cache) {
  LATENTKV_CHECK(num_pages() == 0,
                 "SequenceKv::Init while holding pages; Release() first");
  lists_.assign(cache.num_layers(), {});
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    lists_[l].assign(cache.shape(l).n_kv_heads, HeadList{});
  }
}

absl::Status SequenceKv::SharePrefix(KvCache& cache, const SequenceKv& src,
                                     int64_t n_tokens) {
  LATENTKV_CHECK(
      static_cast<int32_t>(lists_.size()) == cache.num_layers() &&
          static_cast<int32_t>(src.lists_.size()) == cache.num_layers(),
      "SequenceKv::SharePrefix on a sequence not Init'ed for this cache");
  if (num_pages() != 0) {
    return absl::FailedPreconditionError(
        "SequenceKv::SharePrefix: sequence already holds pages");
  }
  const int32_t ps = cache.page_size();
  if (n_tokens < 0 || n_tokens % ps != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SequenceKv::SharePrefix: n_tokens=", n_tokens,
                     " must be a non-negative multiple of page_size=", ps));
  }
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    for (size_t h = 0; h < src.lists_[l].size(); ++h) {
      if (src.lists_[l][h].tokens < n_tokens) {
        return absl::InvalidArgumentError(
            absl::StrCat("SequenceKv::SharePrefix: n_tokens=", n_tokens,
                         " exceeds the source's ", src.lists_[l][h].tokens,
                         " tokens at layer ", l, " head ", h));
      }
    }
  }
  const int64_t n_pages = n_tokens / ps;
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    for (size_t h = 0; h < src.lists_[l].size(); ++h) {
      const HeadList& from = src.lists_[l][h];
      HeadList& to = lists_[l][h];
      to.pages.assign(from.pages.begin(), from.pages.begin() + n_pages);
      for (int32_t page : to.pages) cache.allocator(l).Ref(page);
      to.tokens = n_tokens;
    }
  }
  return absl::OkStatus();
}

absl::Status SequenceKv::AppendSharedBlock(KvCache& cache,
                                           const std::vector<int32_t>& pages) {
  LATENTKV_CHECK(static_cast<int32_t>(lists_.size()) == cache.num_layers(),
                 "SequenceKv::AppendSharedBlock on a sequence not Init'ed");
  size_t heads = 0;
  for (const auto& layer : lists_) heads += layer.size();
  if (pages.size() != heads) {
    return absl::InvalidArgumentError(
        absl::StrCat("SequenceKv::AppendSharedBlock: ", pages.size(),
                     " pages for ", heads, " (layer, head) lists"));
  }
  const int64_t n = lists_[0][0].tokens;
  for (const auto& layer : lists_) {
    for (const HeadList& hl : layer) {
      if (hl.tokens != n || n % cache.page_size() != 0 || hl.aux.tokens != 0 ||
          static_cast<int64_t>(hl.pages.size()) != n / cache.page_size()) {
        return absl::FailedPreconditionError(
            "SequenceKv::AppendSharedBlock: the sequence is not a full cache "
            "of whole pages");
      }
    }
  }
  size_t i = 0;
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    for (HeadList& hl : lists_[l]) {
      cache.allocator(l).Ref(pages[i]);
      hl.pages.push_back(pages[i++]);
      hl.tokens += cache.page_size();
    }
  }
  return absl::OkStatus();
}

void SequenceKv::SetCapacity(std::vector<int64_t> per_layer) {
  capacity_ = std::move(per_layer);
}

int64_t SequenceKv::Room() const {
  int64_t room = std::numeric_limits<int64_t>::max();
  for (size_t l = 0; l < capacity_.size() && l < lists_.size(); ++l) {
    if (capacity_[l] <= 0) continue;
    for (const HeadList& hl : lists_[l]) {
      room = std::min(
          room, std::max<int64_t>(0, capacity_[l] - hl.tokens - hl.aux.tokens));
    }
  }
  return room;
}

int64_t SequenceKv::PagesNeeded(const KvCache& cache, int64_t n) const {
  int64_t needed = 0;
  for (size_t l = 0; l < lists_.size(); ++l) {
    const int64_t cap = capacity(static_cast<int32_t>(l));
    for (const HeadList& hl : lists_[l]) {
      const int64_t tokens =
          cap > 0 ? std::min(hl.tokens + n, std::max(cap, hl.tokens))
                  : hl.tokens + n;
      const int64_t want = CeilDiv(tokens, cache.page_size());
      needed +=
          std::max<int64_t>(0, want - static_cast<int64_t>(hl.pages.size()));
    }
  }
  return needed;
}

absl::Status SequenceKv::Reserve(KvCache& cache, int64_t n) {
  LATENTKV_CHECK(static_cast<int32_t>(lists_.size()) == cache.num_layers(),
                 "SequenceKv::Reserve on a sequence not Init'ed for this "
                 "cache");
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SequenceKv::Reserve: negative token count ", n));
  }
  const int32_t ps = cache.page_size();
  if (n > Room()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "SequenceKv::Reserve: ", n, " more tokens would pass the KV capacity (",
        Room(), " tokens of room)"));
  }
  // Check every layer first so that a failure allocates nothing.
  std::vector<int64_t> needed(lists_.size(), 0);
  std::string shortfall;
  for (size_t l = 0; l < lists_.size(); ++l) {
    for (const HeadList& hl : lists_[l]) {
      const int64_t want = CeilDiv(hl.tokens + n, ps);
      needed[l] +=
          std::max<int64_t>(0, want - static_cast<int64_t>(hl.pages.size()));
    }
    const int32_t free = cache.allocator(static_cast<int32_t>(l)).num_free();
    if (needed[l] > free) {
      absl::StrAppend(&shortfall, shortfall.empty() ? "" : "; ", "layer ", l,
                      " needs ", needed[l], " pages, ", free, " free");
    }
  }
  if (!shortfall.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full reserving ", n, " tokens: ", shortfall));
  }
  for (size_t l = 0; l < lists_.size(); ++l) {
    BlockAllocator& alloc = cache.allocator(static_cast<int32_t>(l));
    for (HeadList& hl : lists_[l]) {
      const int64_t want = CeilDiv(hl.tokens + n, ps);
      while (static_cast<int64_t>(hl.pages.size()) < want) {
        std::optional<int32_t> page = alloc.Allocate();
        LATENTKV_CHECK(page.has_value(), "allocator ran dry after check");
        hl.pages.push_back(*page);
      }
    }
  }
  return absl::OkStatus();
}

void SequenceKv::Append(const KvCache& cache, int32_t layer, int64_t n,
                        int64_t* slots, int64_t first_pos) {
  LATENTKV_CHECK(layer >= 0 && layer < static_cast<int32_t>(lists_.size()),
                 "SequenceKv::Append: layer ", layer, " out of range");
  LATENTKV_CHECK(n >= 0, "SequenceKv::Append: negative n ", n);
  const int64_t ps = cache.page_size();
  std::vector<HeadList>& heads = lists_[layer];
  const int64_t n_kv = static_cast<int64_t>(heads.size());
  for (int64_t h = 0; h < n_kv; ++h) {
    HeadList& hl = heads[h];
    LATENTKV_CHECK(hl.tokens + n <= static_cast<int64_t>(hl.pages.size()) * ps,
                   "SequenceKv::Append of ", n, " tokens at layer ", layer,
                   " head ", h, " holding ", hl.tokens, " tokens in ",
                   hl.pages.size(), " pages: Reserve() first");
    for (int64_t t = 0; t < n; ++t) {
      const int64_t pos = hl.tokens + t;
      slots[t * n_kv + h] = int64_t{hl.pages[pos / ps]} * ps + pos % ps;
    }
    if (first_pos >= 0 && first_pos != hl.tokens) hl.dense = false;
    hl.tokens += n;
  }
}

void SequenceKv::Describe(const KvCache& cache, int32_t layer,
                          std::vector<int32_t>* indptr,
                          std::vector<int32_t>* indices,
                          std::vector<int32_t>* last_page_len) const {
  LATENTKV_CHECK(layer >= 0 && layer < static_cast<int32_t>(lists_.size()),
                 "SequenceKv::Describe: layer ", layer, " out of range");
  const int64_t ps = cache.page_size();
  for (const HeadList& hl : lists_[layer]) {
    const int64_t used = CeilDiv(hl.tokens, ps);
    indices->insert(indices->end(), hl.pages.begin(), hl.pages.begin() + used);
    indptr->push_back(static_cast<int32_t>(indices->size()));
    last_page_len->push_back(
        used == 0 ? 0 : static_cast<int32_t>(hl.tokens - (used - 1) * ps));
  }
}

void SequenceKv::Release(KvCache& cache) {
  for (size_t l = 0; l < lists_.size(); ++l) {
    BlockAllocator& alloc = cache.allocator(static_cast<int32_t>(l));
    for (HeadList& hl : lists_[l]) {
      for (int32_t page : hl.pages) alloc.Unref(page);
      for (int32_t page : hl.aux.codewords) alloc.Unref(page);
      for (int32_t page : hl.aux.records) alloc.Unref(page);
      hl.pages.clear();
      hl.tokens = 0;
      hl.aux = AuxPages{};
      hl.dense = true;
    }
  }
}

absl::Status SequenceKv::Retain(KvCache& cache, int32_t layer, int32_t head,
                                const std::vector<int64_t>& keep,
                                KvMoves* moves) {
  if (layer < 0 || layer >= static_cast<int32_t>(lists_.size()) || head < 0 ||
      head >= static_cast<int32_t>(lists_[layer].size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("SequenceKv::Retain: (layer ", layer, ", head ", head,
                     ") out of range"));
  }
  HeadList& hl = lists_[layer][head];
  for (size_t i = 0; i < keep.size(); ++i) {
    if (keep[i] < 0 || keep[i] >= hl.tokens ||
        (i > 0 && keep[i] <= keep[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SequenceKv::Retain: keep list must be strictly ascending in [0, ",
          hl.tokens, "); entry ", i, " is ", keep[i]));
    }
  }
  const int64_t ps = cache.page_size();
  const int64_t n_keep = static_cast<int64_t>(keep.size());
  // The first slot that moves; pages before it are untouched.
  int64_t first_moved = n_keep;
  for (int64_t i = 0; i < n_keep; ++i) {
    if (keep[i] != i) {
      first_moved = i;
      break;
    }
  }
  const int64_t new_pages = CeilDiv(n_keep, ps);
  // Pages [first_moved / ps, written_end) receive moved rows.
  const int64_t written_end = first_moved < n_keep ? new_pages : 0;
  BlockAllocator& alloc = cache.allocator(layer);
  // Copy-on-write: shared pages among those that will be written.
  int64_t shared_written = 0;
  for (int64_t p = first_moved / ps; p < written_end; ++p) {
    if (alloc.refcount(hl.pages[p]) > 1) ++shared_written;
  }
  if (shared_written > alloc.num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("SequenceKv::Retain: ", shared_written,
                     " shared pages need private copies but only ",
                     alloc.num_free(), " pages are free in layer ", layer));
  }
  // Sources are read through the page list as it was (a replaced shared
  // page stays readable: others still hold it), destinations written through
  // the new one.
  const std::vector<int32_t> old_pages = hl.pages;
  for (int64_t p = first_moved / ps; p < written_end; ++p) {
    const int32_t old = hl.pages[p];
    if (alloc.refcount(old) <= 1) continue;
    const int32_t fresh = *alloc.Allocate();
    // Slots of this page before first_moved keep their rows: copy those;
    // the rest are destinations of the compaction below.
    for (int64_t i = p * ps; i < std::min(first_moved, (p + 1) * ps); ++i) {
      moves->src.push_back(int64_t{old} * ps + i % ps);
      moves->dst.push_back(int64_t{fresh} * ps + i % ps);
    }
    alloc.Unref(old);
    hl.pages[p] = fresh;
  }
  for (int64_t i = first_moved; i < n_keep; ++i) {
    moves->src.push_back(int64_t{old_pages[keep[i] / ps]} * ps + keep[i] % ps);
    moves->dst.push_back(int64_t{hl.pages[i / ps]} * ps + i % ps);
  }
  if (first_moved != n_keep) hl.dense = false;
  for (size_t p = new_pages; p < hl.pages.size(); ++p) alloc.Unref(hl.pages[p]);
  hl.pages.resize(new_pages);
  hl.tokens = n_keep;
  return absl::OkStatus();
}

absl::Status SequenceKv::AppendPerHead(
    KvCache& cache, const std::vector<std::vector<int64_t>>& counts) {
  if (num_pages() != 0 || total_tokens() != 0) {
    return absl::FailedPreconditionError(
        "SequenceKv::AppendPerHead on a sequence that holds tokens");
  }
  const int64_t ps = cache.page_size();
  for (size_t l = 0; l < lists_.size(); ++l) {
    int64_t need = 0;
    for (size_t h = 0; h < lists_[l].size(); ++h) {
      need += CeilDiv(counts[l][h], ps);
    }
    const int32_t free = cache.allocator(static_cast<int32_t>(l)).num_free();
    if (need > free) {
      return absl::ResourceExhaustedError(
          absl::StrCat("KV cache full importing layer ", l, ": ", need,
                       " pages needed, ", free, " free"));
    }
  }
  for (size_t l = 0; l < lists_.size(); ++l) {
    BlockAllocator& alloc = cache.allocator(static_cast<int32_t>(l));
    for (size_t h = 0; h < lists_[l].size(); ++h) {
      HeadList& hl = lists_[l][h];
      while (static_cast<int64_t>(hl.pages.size()) <
             CeilDiv(counts[l][h], ps)) {
        hl.pages.push_back(*alloc.Allocate());
      }
      hl.tokens = counts[l][h];
      hl.dense = false;
    }
  }
  return absl::OkStatus();
}

int64_t SequenceKv::SlotOf(const KvCache& cache, int32_t layer, int32_t head,
                           int64_t i) const {
  const HeadList& hl = lists_[layer][head];
  LATENTKV_CHECK(i >= 0 && i < hl.tokens, "SequenceKv::SlotOf: slot ", i,
                 " outside [0, ", hl.tokens, ")");
  const int64_t ps = cache.page_size();
  return int64_t{hl.pages[i / ps]} * ps + i % ps;
}

int64_t SequenceKv::num_tokens(int32_t layer, int32_t head) const {
  return lists_[layer][head].tokens;
}

int64_t SequenceKv::max_tokens() const {
  int64_t most = 0;
  for (const std::vector<HeadList>& layer : lists_) {
    for (const HeadList& hl : layer) most = std::max(most, hl.tokens);
  }
  return most;
}

int64_t SequenceKv::total_tokens() const {
  int64_t total = 0;
  for (const std::vector<HeadList>& layer : lists_) {
    for (const HeadList& hl : layer) total += hl.tokens;
  }
  return total;
}

int64_t SequenceKv::num_pages() const {
  int64_t total = 0;
  for (const std::vector<HeadList>& layer : lists_) {
    for (const HeadList& hl : layer) {
      total +=
          hl.pages.size() + hl.aux.codewords.size() + hl.aux.records.size();
    }
  }
  return total;
}

}  // namespace latentkv::worker
