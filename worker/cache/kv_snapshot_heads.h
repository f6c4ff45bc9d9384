// Re-sharding a KvSnapshot (kv_snapshot.h) by KV head, for tensor-parallel
// groups: a group's snapshot holds every KV head of the model; rank r of a
// group of `parts` ranks holds KV heads [r * n / parts, (r + 1) * n / parts)
// of every layer (model/shard.h). A prefill group joins its ranks' parts
// into one snapshot, a decode group splits one into its ranks' parts, so
// what moves between groups is the same bytes whatever their sizes.
//
// With each KV head go its codebook entries and, of each layer's residency
// query window (int32 count, int32 next, f32 q [count, n_heads, d_qk],
// int32 positions [count]), the q_per_kv query heads it serves (query heads
// [h * q_per_kv, (h + 1) * q_per_kv) for KV head h, as the shard keeps them).
// Pure functions; thread-compatible.
#ifndef LATENTKV_WORKER_CACHE_KV_SNAPSHOT_HEADS_H_
#define LATENTKV_WORKER_CACHE_KV_SNAPSHOT_HEADS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/cache/kv_snapshot.h"

namespace latentkv::worker {

// `full` as `parts` snapshots of equal KV-head ranges, in rank order.
// InvalidArgument when parts < 1, a layer's KV heads do not divide by
// parts, q_per_kv < 1, or a layer's rows, codebooks or window do not have
// the snapshot's head count (or a window's size does not fit its count).
absl::StatusOr<std::vector<KvSnapshot>> SplitHeads(const KvSnapshot& full,
                                                   int32_t parts,
                                                   int32_t q_per_kv);

// KV heads [begin, end) of `s` (indices into its heads, in every layer),
// with their codebook entries and query-window heads. InvalidArgument when
// the range is not within every layer's heads or `s` is malformed.
absl::StatusOr<KvSnapshot> SliceHeads(const KvSnapshot& s, int32_t begin,
                                      int32_t end, int32_t q_per_kv);

// True when, in every layer, every KV head holds as many tokens (rows plus
// codebook records) as the others: what a group's ranks must import for
// their caches to stay in step (full caches and SnapKV eviction export
// that; a peer's ragged or partial KV does not).
bool HeadsHoldEqualTokens(const KvSnapshot& s);

// The inverse: `parts` in head order, each with the same layers, dims and
// dtype (head counts may differ); residency state (windows) present in all
// parts or none, and the parts' windows agreeing on their positions.
// InvalidArgument otherwise.
absl::StatusOr<KvSnapshot> JoinHeads(const std::vector<KvSnapshot>& parts,
                                     int32_t q_per_kv);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_CACHE_KV_SNAPSHOT_HEADS_H_
