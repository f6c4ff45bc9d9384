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
#include <string>
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

// Where a rank-to-rank prefill -> decode transfer's KV is: parked by the
// prefill group's ranks (kv_parking.h) under `transfer_id`, rank i holding
// the group's global KV heads [head_begin, head_end) behind `address`.
struct KvPullSource {
  std::string address;  // host:port of that rank's KvSource service
  int32_t head_begin = 0;
  int32_t head_end = 0;
};
struct KvPull {
  std::string transfer_id;  // empty: no pull
  std::vector<KvPullSource> sources;
};

// A rank's side of a rank-to-rank transfer: pulls the KV heads it holds
// from the prefill ranks that parked them. Implemented by
// worker/server/kv_source.h over gRPC. Thread-safety: thread-safe.
class RankKvPuller {
 public:
  virtual ~RankKvPuller() = default;
  // This rank's KV heads of `pull` (rows and residency state, as parked),
  // with the bytes moved in *bytes. An error (a source dead or slow, a
  // malformed or mismatched part) means the caller falls back.
  virtual absl::StatusOr<KvSnapshot> Pull(const KvPull& pull,
                                          int64_t* bytes) = 0;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_RANK_KV_STORE_H_
