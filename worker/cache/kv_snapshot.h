// A sequence's KV cache in transferable form (prefill -> decode transfer,
// worker/server/): for every (layer, KV head), the rows it holds in slot
// order, each row = int32 position, f32 K [d_qk(layer)], f32 V [d_vo(layer)]
// (little-endian, packed). Rows are the latent, post-eviction slots: what
// moves is n_kv * (d_qk + d_vo) values (+ a position) per token actually
// kept, per layer.
#ifndef LATENTKV_WORKER_CACHE_KV_SNAPSHOT_H_
#define LATENTKV_WORKER_CACHE_KV_SNAPSHOT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/cache/kv_cache.h"

namespace latentkv::worker {

struct KvSnapshot {
  std::vector<LayerKvShape> shapes;            // [num_layers]
  std::vector<std::vector<std::string>> rows;  // [layer][kv head] packed rows
  // Bytes of one row of `layer`.
  static int64_t RowBytes(const LayerKvShape& s) {
    return 4 * (1 + int64_t{s.d_qk} + s.d_vo);
  }
  int64_t bytes() const;
};

// Copies the rows `kv` holds. FailedPrecondition when some tokens live in
// aux pages (codebook layers have no row form yet).
absl::StatusOr<KvSnapshot> ExportKv(const KvCache& cache, const SequenceKv& kv);

// Fills `kv` (Init'ed, holding nothing) with the snapshot's rows, allocating
// pages per (layer, head). InvalidArgument when the shapes differ from the
// cache's or a row blob is not a whole number of rows; ResourceExhausted when
// the pages do not fit (nothing allocated then).
absl::Status ImportKv(KvCache& cache, SequenceKv& kv, const KvSnapshot& snap);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_CACHE_KV_SNAPSHOT_H_
