// Prefill -> decode KV transfer over gRPC (TCP): the layout descriptor each
// side checks, and the decode side's client for a prefill worker's
// Worker.Prefill stream. Rows are the latent, post-eviction slots
// (worker/cache/kv_snapshot.h), so a transfer moves n_kv * (d_qk + d_vo)
// values (+ a position) per kept token and layer.
#ifndef LATENTKV_WORKER_SERVER_KV_TRANSFER_H_
#define LATENTKV_WORKER_SERVER_KV_TRANSFER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "latentkv/v1/worker.pb.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/engine/rank_kv_store.h"
#include "worker/engine/sequence.h"
#include "worker/server/prefill_assembler.h"  // CheckLayout

namespace latentkv::worker {

// The codec name of row transfers.
inline constexpr char kRowsCodec[] = "rows";

// The KV shapes of a tensor-parallel group of `tp_size` ranks whose each
// rank's cache has `rank_shapes` (KV heads split evenly, model/shard.h):
// what a transfer or a kvstore block holds, whatever the group's size.
std::vector<LayerKvShape> GroupKvShapes(std::vector<LayerKvShape> rank_shapes,
                                        int tp_size);

// This worker's layout: its group's KV shapes (GroupKvShapes), the KV dtype
// of its rows, its TP size (informational: rows travel as the group's
// whole, so groups of any sizes exchange them).
latentkv::v1::KvLayout TransferLayout(const std::vector<LayerKvShape>& shapes,
                                      DType dtype, int tp_size);
struct RemotePrefill {
  std::shared_ptr<const KvSnapshot> kv;  // null when the request ended
  int32_t first_token = -1;
  FinishReason finish = FinishReason::kNone;
  // The first token's log-probabilities, when the request asked for them.
  std::optional<TokenLogprobs> first_logprobs;
  // A rank-pull answer: kv is null and the prefill group's ranks parked the
  // KV where `pull` says (sources with an empty address: `address` called).
  KvPull pull;
};

// TokenLogprobs to and from the wire. From the wire, at most
// kMaxTopLogprobs alternatives are kept (a peer's longer list is cut).
void LogprobsToProto(const TokenLogprobs& in, latentkv::v1::TokenLogprobs* out);
TokenLogprobs LogprobsFromProto(const latentkv::v1::TokenLogprobs& in);

// Reads a Worker.Prefill-shaped stream into `assembler` (`peek` sees each
// message first; may be null), cancelling at the first bad message.
// Errors: the assembler's, or the stream's status naming `who`.
absl::Status DrainPrefillStream(
    grpc::ClientContext& ctx,
    grpc::ClientReader<latentkv::v1::PrefillResponse>& reader,
    PrefillAssembler& assembler, const std::string& who,
    const std::function<void(const latentkv::v1::PrefillResponse&)>& peek);

// Calls Worker.Prefill on `address` and assembles the snapshot (rows, and
// codebook entries when `request` accepts them), checking the layout against
// `ours` and every layer's rows and codebook blobs; or, when the prefill
// group answers a rank_pull request with where it parked the KV, returns
// that (RemotePrefill::pull). Errors: the RPC's status
// (UNAVAILABLE, DEADLINE_EXCEEDED after `timeout`, ...), FailedPrecondition
// for a layout mismatch, DataLoss for malformed rows or codebook blobs.
absl::StatusOr<RemotePrefill> CallPrefill(
    const std::string& address, const latentkv::v1::PrefillRequest& request,
    const latentkv::v1::KvLayout& ours, absl::Duration timeout);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_SERVER_KV_TRANSFER_H_
