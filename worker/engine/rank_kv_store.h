// A rank's own access to the shared latent-KV store (latentkv-kvstore): the
// KV heads this rank holds, of blocks stored under the prompt's chain keys.
// Every rank of a tensor-parallel group fetches and publishes its heads
// itself (the store keeps a block back until every head has arrived), so
// stored KV never passes through the group leader; a group of one holds
// every head. Implemented by worker/server/prefix_cache.h over gRPC.
// Thread-safety: implementations are thread-safe.
#ifndef LATENTKV_WORKER_ENGINE_RANK_KV_STORE_H_
#define LATENTKV_WORKER_ENGINE_RANK_KV_STORE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/cache/kv_snapshot.h"

namespace latentkv::worker {

class RankKvStore {
 public:
  virtual ~RankKvStore() = default;
  // This rank's KV heads of exactly the stored blocks `keys` (a prompt's
  // leading blocks, first first), as a full cache of keys.size() x
  // block_tokens positions. An error when any block is missing (evicted),
  // corrupt or shaped for another layout: the caller falls back.
  virtual absl::StatusOr<KvSnapshot> FetchBlocks(
      absl::Span<const uint64_t> keys) = 0;
  // Queues the whole blocks of `tokens` that `kv` (this rank's heads, a
  // full cache whose row i holds position i) covers for the store, and
  // returns without waiting on the network; failures are counted, never
  // reported to a request.
  virtual void PublishAsync(std::vector<int32_t> tokens, KvSnapshot kv) = 0;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_RANK_KV_STORE_H_
