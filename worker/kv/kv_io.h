// Export and import of one sequence's KV rows (KvSnapshot,
// worker/cache/kv_snapshot.h) through the pools' backend ops: the payload of
// prefill -> decode transfers and of kvstore blocks.
#ifndef LATENTKV_WORKER_KV_KV_IO_H_
#define LATENTKV_WORKER_KV_KV_IO_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cache/kv_cache.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/kv/kv_pools.h"

namespace latentkv::worker {

// Copies the rows `kv` holds (in the pools' dtype). Heads holding codebook
// entries (aux pages) are FailedPrecondition unless `with_codebooks`, where
// the caller adds them (SequenceResidency::ExportState).
absl::StatusOr<KvSnapshot> ExportKv(const KvCache& cache, KvPools& pools,
                                    const SequenceKv& kv,
                                    bool with_codebooks = false);

// Fills `kv` (Init'ed, holding nothing) with the snapshot's rows, allocating
// pages per (layer, head) and writing the rows through the pools; a head
// whose rows hold positions 0, 1, 2, ... is marked positions_dense.
// Codebook entries are left to the caller (SequenceResidency::ImportState),
// whose codebook blobs are only size-checked here. InvalidArgument when the
// shapes or the dtype differ from the cache's or a row blob is not a whole
// number of rows; ResourceExhausted when the pages do not fit (nothing
// allocated then).
absl::Status ImportKv(KvCache& cache, KvPools& pools, SequenceKv& kv,
                      const KvSnapshot& snap);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_KV_KV_IO_H_
