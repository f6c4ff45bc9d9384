// A worker's use of the shared latent-KV store (latentkv-kvstore) as a
// prefix cache: before prefilling a full-cache request, the longest stored
// prefix of its prompt (whole blocks of block_tokens tokens, chain-keyed) is
// fetched and imported instead of recomputed; after a full-cache request,
// the blocks of its tokens are published. Block payloads are the rows of
// worker/cache/kv_snapshot.h: for layer l, the block's rows of KV head 0,
// then head 1, ... (block_tokens rows each).
//
// Compressed requests (a residency policy) neither fetch nor publish: their
// cache depends on the whole prompt, so a prefix of it is not reusable.
// Store failures never fail a request: the worker prefills locally.
// Thread-safety: thread-safe (RPC threads call it concurrently).
#ifndef LATENTKV_WORKER_SERVER_PREFIX_CACHE_H_
#define LATENTKV_WORKER_SERVER_PREFIX_CACHE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvstore/client.h"
#include "worker/cache/kv_snapshot.h"

namespace latentkv::worker {

struct PrefixCacheOptions {
  std::string address;        // host:port of latentkv-kvstore; required
  int32_t block_tokens = 16;  // tokens per block; > 0
  std::string model_id;       // part of the store's layout
  DType dtype = DType::kF32;  // KV dtype of the rows (the engine's)
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

class StorePrefixCache {
 public:
  StorePrefixCache(const PrefixCacheOptions& options,
                   std::vector<LayerKvShape> shapes);

  // The rows of the longest stored prefix of `prompt` that leaves at least
  // one token to compute, or null when nothing is stored (or on a store
  // error). *tokens = the prefix length.
  std::shared_ptr<const KvSnapshot> Fetch(const std::vector<int32_t>& prompt,
                                          int64_t* tokens);
  // Publishes the whole blocks of tokens[0, rows) from `kv`, the snapshot of
  // a full cache (row i holds position i) of a sequence whose tokens are
  // `tokens`.
  void Publish(const std::vector<int32_t>& tokens, const KvSnapshot& kv);

  int32_t block_tokens() const { return options_.block_tokens; }
  int64_t lookups() const { return lookups_.load(); }
  int64_t hit_tokens() const { return hit_tokens_.load(); }
  int64_t published_blocks() const { return published_.load(); }
  int64_t errors() const { return errors_.load(); }

 private:
  PrefixCacheOptions options_;
  std::vector<LayerKvShape> shapes_;
  kvstore::KvLayout layout_;
  std::unique_ptr<kvstore::KvStoreClient> client_;
  std::atomic<int64_t> lookups_{0}, hit_tokens_{0}, published_{0}, errors_{0};
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_SERVER_PREFIX_CACHE_H_
