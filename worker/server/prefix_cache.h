// A worker rank's use of the shared latent-KV store (latentkv-kvstore) as a
// prefix cache: before prefilling a full-cache request, the longest stored
// prefix of its prompt (whole blocks of block_tokens tokens, chain-keyed) is
// fetched and imported instead of recomputed; after a full-cache request,
// the blocks of its tokens are published. Block payloads are the rows of
// worker/cache/kv_snapshot.h: for layer l, the block's rows of KV head 0,
// then head 1, ... (block_tokens rows each).
//
// In a tensor-parallel group every rank has its own StorePrefixCache for
// its KV-head range: it publishes only its heads (the store holds a block
// back until every head has arrived, kvstore/head_parts.h) and fetches only
// its heads (the store slices blocks whatever TP size wrote them), so
// stored KV never passes through the group's leader.
//
// Compressed requests (a residency policy) neither fetch nor publish: their
// cache depends on the whole prompt, so a prefix of it is not reusable.
// Store failures never fail a request: the worker prefills locally.
// Publishing runs on a thread of its own (PublishAsync never waits on the
// network) behind a queue bounded in bytes.
// Thread-safety: thread-safe (RPC threads and the engine call it).
#ifndef LATENTKV_WORKER_SERVER_PREFIX_CACHE_H_
#define LATENTKV_WORKER_SERVER_PREFIX_CACHE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/client.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/engine/engine_types.h"
#include "worker/engine/rank_kv_store.h"

namespace latentkv::worker {

struct PrefixCacheOptions {
  std::string address;        // host:port of latentkv-kvstore; required
  int32_t block_tokens = 16;  // tokens per block; > 0
  std::string model_id;       // part of the store's layout
  DType dtype = DType::kF32;  // KV dtype of the rows (the engine's)
  // The KV heads this rank holds, [head_begin, head_end) of the group's;
  // both 0 (default): every head (a group of one).
  int32_t head_begin = 0;
  int32_t head_end = 0;
  // Sequences waiting to be published beyond this many row bytes are
  // dropped (counted in publish_dropped()); > 0. Default 256 MiB.
  int64_t max_queued_bytes = int64_t{256} << 20;
};

// The shape fields of the layout of a cache over `shapes`: layers, KV heads,
// per-layer d_qk / d_vo and nope_dims (empty when every layer is fully
// rotary, the canonical form); the other fields at their defaults.
// StoreLayout and TransferLayout (kv_transfer.h) fill in the rest.
kvstore::KvLayout ShapesLayout(const std::vector<LayerKvShape>& shapes);

// The store layout of a cache with `options` over layers of `shapes` (codec
// "rows", tensor-parallel size 1): what the worker sends with every call
// and what `latentkv serve` fixes the store to at start (--layout).
kvstore::KvLayout StoreLayout(const PrefixCacheOptions& options,
                              const std::vector<LayerKvShape>& shapes);
// The model id in the layout: the last component of the --model path.
std::string StoreModelId(const std::string& model_path);

class StorePrefixCache final : public RankKvStore {
 public:
  // `group_shapes`: every KV head of the group (GroupKvShapes).
  StorePrefixCache(const PrefixCacheOptions& options,
                   const std::vector<LayerKvShape>& group_shapes);
  // Stops the publishing thread; what is still queued is dropped.
  ~StorePrefixCache() override;

  // This rank's heads of the longest stored prefix of `prompt` that leaves
  // at least one token to compute, or null when nothing is stored (or on a
  // store error). *tokens = the prefix length; `keys` (if given) = the
  // prefix's block keys.
  std::shared_ptr<const KvSnapshot> Fetch(
      const std::vector<int32_t>& prompt, int64_t* tokens,
      std::vector<uint64_t>* keys = nullptr);
  // RankKvStore: this rank's heads of exactly `keys`.
  absl::StatusOr<KvSnapshot> FetchBlocks(
      absl::Span<const uint64_t> keys) override;
  // RankKvStore: Publish on the publishing thread.
  void PublishAsync(std::vector<int32_t> tokens, KvSnapshot kv) override;
  // Publishes the whole blocks of tokens[0, rows) from `kv`, the snapshot of
  // a full cache (row i holds position i) of this rank's heads of a
  // sequence whose tokens are `tokens`, now.
  void Publish(const std::vector<int32_t>& tokens, const KvSnapshot& kv);
  // Waits until everything queued by PublishAsync so far has been sent.
  void Flush();

  int32_t block_tokens() const { return options_.block_tokens; }
  // This rank's KV shapes (its head range of the group's).
  const std::vector<LayerKvShape>& shapes() const { return shapes_; }
  int64_t lookups() const { return lookups_.load(); }
  int64_t hit_tokens() const { return hit_tokens_.load(); }
  int64_t published_blocks() const { return published_.load(); }
  int64_t publish_dropped() const { return dropped_.load(); }
  int64_t errors() const { return errors_.load(); }

 private:
  struct Job {
    std::vector<int32_t> tokens;
    KvSnapshot kv;
    int64_t bytes = 0;
  };
  void PublishLoop();
  // This rank's heads of the leading resident blocks of `keys` as rows
  // (block_tokens per block); NotFound when fewer than `want` are resident.
  // Store errors and unreadable blocks are counted in errors().
  absl::StatusOr<std::shared_ptr<const KvSnapshot>> GetRows(
      absl::Span<const uint64_t> keys, size_t want);

  PrefixCacheOptions options_;
  std::vector<LayerKvShape> shapes_;  // this rank's heads
  kvstore::KvLayout layout_;          // the group's (every head)
  std::unique_ptr<kvstore::KvStoreClient> client_;
  std::atomic<int64_t> lookups_{0}, hit_tokens_{0}, published_{0}, errors_{0},
      dropped_{0};

  absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // a job is being sent
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Sets `g` up to import this rank's heads of the longest stored prefix of
// its prompt from `cache` (a group of `tp_size` ranks: with the block keys,
// so the other ranks fetch theirs) and to publish its blocks when it
// finishes. The caller has checked that the request takes a full cache.
void UseStorePrefix(StorePrefixCache& cache, int tp_size, GenerationRequest* g);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_SERVER_PREFIX_CACHE_H_
