// One rank's KV heads of one sequence as a TpKv message
// (proto/latentkv/v1/worker.proto), the payload of the group-internal
// gather (export) and scatter (import) of worker/tp/tensor_parallel.h.
// The sender's shapes and dtype travel with it: the ranks of a group must
// agree on them (a misconfigured rank is refused, not imported).
#ifndef LATENTKV_WORKER_TP_TP_KV_H_
#define LATENTKV_WORKER_TP_TP_KV_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/engine/rank_kv_store.h"

namespace latentkv::v1 {
class KvPullSpec;
}  // namespace latentkv::v1

namespace latentkv::worker {

// `part`'s rows, codebooks and windows as a serialized TpKv.
std::string SerializeTpKv(const KvSnapshot& part);
// A serialized TpKv whose error field says why a rank could not export.
std::string SerializeTpKvError(const std::string& error);

// A serialized TpKv as a snapshot of layers `shapes` in `dtype`. DataLoss
// for bytes that do not parse or do not have one entry per layer and KV
// head; FailedPrecondition when the sender's layout differs from `shapes`
// and `dtype`; Internal with the rank's message for an error part. Row and
// blob sizes are left to ImportKv / ParseCodebook.
absl::StatusOr<KvSnapshot> ParseTpKv(const std::string& bytes,
                                     const std::vector<LayerKvShape>& shapes,
                                     DType dtype);

// A rank-to-rank transfer's sources on the wire and back.
void PullToProto(const KvPull& in, latentkv::v1::KvPullSpec* out);
KvPull PullFromProto(const latentkv::v1::KvPullSpec& in);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_TP_TP_KV_H_
