// The page table of the paged latent KV cache: a reference-counted page
// allocator per layer and the per-(sequence, layer, KV head) page lists.
//
// A page holds `page_size` token slots of ONE KV head of one layer:
// K [page_size, d_qk(layer)], V [page_size, d_vo(layer)] in the KV dtype and
// the absolute position of each slot (int32). Pages are per layer because a
// page's byte size follows that layer's latent dims. Total memory is bounded
// by KvCacheOptions::max_bytes; with uniform appends every layer gets the same
// token capacity: layer l has P * n_kv(l) pages where
// P = floor(max_bytes / sum_l n_kv(l) * page_bytes(l)).
//
// Control plane only: this holds no KV bytes. The pools live in backend
// memory (worker/kv/kv_pools.h); whatever this table decides that moves
// bytes (compaction after eviction, copy-on-write) comes out as a KvMoves
// list the data plane applies.
// Thread-safety: not thread-safe; owned by the engine thread.
#ifndef LATENTKV_WORKER_CACHE_KV_CACHE_H_
#define LATENTKV_WORKER_CACHE_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace latentkv::worker {

// Reference-counted allocator of page ids [0, num_pages).
// Invariant: a page is free iff its refcount is 0.
class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_pages);
  // A free page with refcount 1, or nullopt when none is free.
  std::optional<int32_t> Allocate();
  // Adds a reference (sharing a page, e.g. a cached prefix). Page must be live.
  void Ref(int32_t page);
  // Drops a reference; the page is free again at 0.
  void Unref(int32_t page);
  int32_t refcount(int32_t page) const { return refcount_[page]; }
  int32_t num_pages() const { return static_cast<int32_t>(refcount_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }

 private:
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;  // min-heap of free ids; lowest handed out first
};

struct LayerKvShape {
  int32_t n_kv_heads = 0;
  int32_t d_qk = 0;
  int32_t d_vo = 0;
  // Position-free key channels (partial rotary: the last nope_dims of each
  // key head carry no RoPE); 0 <= nope_dims <= d_qk. Changes no byte count;
  // carried so that layouts refuse KV rotated under another split.
  int32_t nope_dims = 0;
};

struct KvCacheOptions {
  int32_t page_size = 16;                  // token slots per page; > 0
  int64_t max_bytes = int64_t{256} << 20;  // bound on all pools together
  // Element type of K and V in the pools: f32, bf16, f16 or fp8_e4m3 (what
  // a page's bytes, and so the page count, follow).
  DType dtype = DType::kF32;
};

// Slot moves within one layer's pool that the page table asks of the data
// plane (kernels::MoveKvSlots): src[i] -> dst[i], as if every source were
// read before any destination is written; destinations distinct.
struct KvMoves {
  std::vector<int64_t> src, dst;  // flat slot ids (page * page_size + offset)
  bool empty() const { return src.empty(); }
  void clear() {
    src.clear();
    dst.clear();
  }
};

class KvCache {
 public:
  // InvalidArgument when the budget cannot hold one page per (layer, head)
  // or the dtype is not a KV dtype.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(
      std::vector<LayerKvShape> layers, const KvCacheOptions& options);

  int32_t num_layers() const { return static_cast<int32_t>(layers_.size()); }
  int32_t page_size() const { return page_size_; }
  DType dtype() const { return dtype_; }
  // Bytes of one K or V element.
  int32_t elem_bytes() const { return DTypeSize(dtype_); }
  // Bytes a token takes in `layer`'s pool per KV head: K + V values, without
  // the slot's position.
  int64_t token_data_bytes(int32_t layer) const {
    return int64_t{elem_bytes()} * (layers_[layer].d_qk + layers_[layer].d_vo);
  }
  const LayerKvShape& shape(int32_t layer) const { return layers_[layer]; }
  // Bytes of one page of `layer` (K + V + positions).
  int64_t page_bytes(int32_t layer) const;
  BlockAllocator& allocator(int32_t layer) { return allocators_[layer]; }
  const BlockAllocator& allocator(int32_t layer) const {
    return allocators_[layer];
  }
  // Pages in use over all layers, and their bytes.
  int64_t pages_in_use() const;
  int64_t bytes_in_use() const;
  // Bytes of the pages of `layer` in use.
  int64_t layer_bytes_in_use(int32_t layer) const;
  int64_t capacity_bytes() const;

 private:
  KvCache() = default;
  int32_t page_size_ = 0;
  DType dtype_ = DType::kF32;
  std::vector<LayerKvShape> layers_;
  std::vector<BlockAllocator> allocators_;
};

// The pages one sequence holds: for each (layer, KV head) an ordered page list
// and the number of tokens stored (its logical slots 0..tokens-1, in append
// order). Appends go to every (layer, head) alike; residency policies
// (worker/residency: SnapKV eviction, predefined capacity) then drop slots per
// (layer, head) with Retain(), so heads and layers hold different tokens.
// Each slot keeps its absolute position, so RoPE and the causal mask stay
// right after slots are dropped.
class SequenceKv {
 public:
  SequenceKv() = default;
  // Starts empty; Release() must be called before destruction if pages held.
  void Init(const KvCache& cache);

  // Predefined KV capacity (arXiv 2411.15785): the most tokens each KV head
  // of layer l may hold, per_layer[l] (0: unbounded); one entry per layer or
  // empty (all unbounded). Survives Init() and Release(). The residency
  // policy evicts before a layer passes it; Reserve() refuses to.
  void SetCapacity(std::vector<int64_t> per_layer);
  int64_t capacity(int32_t layer) const {
    return capacity_.empty() ? 0 : capacity_[layer];
  }
  // Tokens that can be appended before some (layer, head) would pass its
  // capacity; INT64_MAX when no layer is bounded.
  int64_t Room() const;

  // Makes room for `n` more tokens in every (layer, head), allocating pages
  // as needed; all-or-nothing: on ResourceExhausted nothing is allocated.
  // FailedPrecondition when n more tokens would pass a layer's capacity.
  absl::Status Reserve(KvCache& cache, int64_t n);
  // Makes this sequence (Init'ed, holding no pages) share the first
  // `n_tokens` tokens of `src` in every (layer, head) by adding a reference to
  // each of src's pages holding them (a cached prefix). n_tokens must be a
  // multiple of page_size (so later appends never write into a shared page)
  // and at most src's token count in every (layer, head): InvalidArgument
  // otherwise, FailedPrecondition if this sequence already holds pages.
  absl::Status SharePrefix(KvCache& cache, const SequenceKv& src,
                           int64_t n_tokens);
  // Appends one full page per (layer, head) that another holder (a prefix
  // cache) owns, adding a reference to each: `pages` lists them layer-major
  // ([layer][head] flattened), each holding page_size tokens. Every (layer,
  // head) must hold the same multiple of page_size tokens and no aux pages
  // (FailedPrecondition otherwise); InvalidArgument for a wrong page count.
  absl::Status AppendSharedBlock(KvCache& cache,
                                 const std::vector<int32_t>& pages);
  // Appends counts[layer][head] slots to an empty sequence (a transferred
  // cache whose heads hold different tokens), allocating their pages:
  // all-or-nothing (ResourceExhausted). FailedPrecondition when the sequence
  // holds tokens already. Slots are then addressed with SlotOf().
  absl::Status AppendPerHead(KvCache& cache,
                             const std::vector<std::vector<int64_t>>& counts);
  // Pages needed (summed over layers and heads) to append n more tokens, each
  // (layer, head) counted up to its capacity.
  int64_t PagesNeeded(const KvCache& cache, int64_t n) const;
  // Assigns the next n slots in `layer` (which must be reserved) and writes
  // their flat slot ids (page * page_size + offset) to slots[t * n_kv + h].
  // `first_pos`: the position of the first of them (the model runner passes
  // the chunk's start), so the table knows whether slot i still holds
  // position i (positions_dense); -1: they continue the positions held.
  void Append(const KvCache& cache, int32_t layer, int64_t n, int64_t* slots,
              int64_t first_pos = -1);
  // Appends this sequence's ragged description for `layer` (one entry per KV
  // head): page ids to indices, running count to indptr, and last_page_len.
  // Only pages holding appended tokens are described (reserved but still
  // empty pages are not); the caller pushes indptr's initial 0. A head with
  // no tokens contributes no pages and last_page_len 0.
  void Describe(const KvCache& cache, int32_t layer,
                std::vector<int32_t>* indptr, std::vector<int32_t>* indices,
                std::vector<int32_t>* last_page_len) const;
  // Keeps only the logical slots `keep` of (layer, head) -- strictly
  // ascending indices in [0, num_tokens(layer, head)) -- in order; pages past
  // the new end go back to the allocator (so KV bytes in use drop). The rows
  // that must move forward are appended to `moves` (slots of this layer's
  // pool), which the caller applies (KvPools::Apply) before the freed pages
  // are written again. A shared page (refcount > 1, e.g. a cached prefix)
  // that would be written is first replaced by a private page, and the moves
  // fill it (its untouched slots copied, its moved ones moved); old pages
  // stay readable since they remain referenced elsewhere. ResourceExhausted
  // when no page is free for such a copy, and nothing is changed then.
  // InvalidArgument for a bad `keep`.
  absl::Status Retain(KvCache& cache, int32_t layer, int32_t head,
                      const std::vector<int64_t>& keep, KvMoves* moves);
  // True while logical slot i of (layer, head) holds position i for every i
  // (appends from position 0 without eviction), which is what a shared
  // prefix block must be. Retain of anything but a prefix and AppendPerHead
  // clear it; importers that checked the positions set it back.
  bool positions_dense(int32_t layer, int32_t head) const {
    return lists_[layer][head].dense;
  }
  void set_positions_dense(int32_t layer, int32_t head) {
    lists_[layer][head].dense = true;
  }
  // Flat pool slot id (page * page_size + offset) of logical slot i of
  // (layer, head); i < num_tokens(layer, head).
  int64_t SlotOf(const KvCache& cache, int32_t layer, int32_t head,
                 int64_t i) const;
  // The i-th page of (layer, head)'s token page list (holding logical slots
  // [i * page_size, (i + 1) * page_size)); i < that list's length.
  int32_t page_at(int32_t layer, int32_t head, int64_t i) const {
    return lists_[layer][head].pages[i];
  }
  // Pages a residency policy keeps for (layer, head) besides the token page
  // list: the codebook storage of worker/residency/codebook_store.h, whose
  // `tokens` are attended to through a reconstructed copy. They belong to the
  // sequence: Release() returns them, num_pages() counts them, and Room()
  // counts their tokens against the capacity.
  struct AuxPages {
    std::vector<int32_t> codewords;
    std::vector<int32_t> records;
    int64_t tokens = 0;
  };
  AuxPages& aux(int32_t layer, int32_t head) { return lists_[layer][head].aux; }
  const AuxPages& aux(int32_t layer, int32_t head) const {
    return lists_[layer][head].aux;
  }
  // Tokens (layer, head) holds: in its page list plus in its aux pages.
  int64_t held_tokens(int32_t layer, int32_t head) const {
    return lists_[layer][head].tokens + lists_[layer][head].aux.tokens;
  }

  // Returns every page to the allocators (drops this sequence's references).
  void Release(KvCache& cache);

  int64_t num_tokens(int32_t layer, int32_t head) const;
  // The most tokens any (layer, head) holds.
  int64_t max_tokens() const;
  // Tokens held summed over layers and heads.
  int64_t total_tokens() const;
  int64_t num_pages() const;  // over all layers and heads

 private:
  struct HeadList {
    std::vector<int32_t> pages;
    int64_t tokens = 0;  // tokens stored (appended)
    AuxPages aux;
    bool dense = true;  // see positions_dense()
  };
  // lists_[layer][head]
  std::vector<std::vector<HeadList>> lists_;
  std::vector<int64_t> capacity_;  // [num_layers] or empty
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_CACHE_KV_CACHE_H_
