// A worker's reading of kvstore blocks (prefix_cache.h) into a KvSnapshot,
// apart from the RPC, so the checks on a store's bytes can be tested and
// fuzzed without a store (tests/fuzz/fuzz_kvstore.cc).
#ifndef LATENTKV_WORKER_SERVER_STORE_ROWS_H_
#define LATENTKV_WORKER_SERVER_STORE_ROWS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kvstore/block_store.h"
#include "worker/cache/kv_snapshot.h"

namespace latentkv::worker {

// The rows of `blocks` (a prompt's first blocks in order, as Get returned
// them; layer payloads hold the block's rows of KV head 0, then head 1, ...,
// `block_tokens` rows each) as a snapshot of `shapes` in `dtype`. Payloads of
// layers past `shapes` are ignored. DataLoss when a payload is absent, fails
// its checksum or has the wrong size, a layer is missing from some block, or
// the rows hold non-finite values (KvSnapshot::CheckRows).
absl::StatusOr<std::shared_ptr<const KvSnapshot>> SnapshotFromBlocks(
    const std::vector<LayerKvShape>& shapes, DType dtype, int32_t block_tokens,
    const std::vector<kvstore::Block>& blocks);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_SERVER_STORE_ROWS_H_
