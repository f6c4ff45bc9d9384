// The decode side's assembly of one Worker.Prefill stream into a KvSnapshot,
// apart from the RPC (kv_transfer.h's CallPrefill feeds it what it reads), so
// the checks on a peer's bytes can be tested and fuzzed without a channel
// (tests/fuzz/fuzz_kv_transfer.cc).
//
// A stream is a first message (the sender's layout, the first token, its
// finish reason) and then one message per layer in order: the rows of every
// KV head (whole rows of kv_snapshot.h's format), optionally the layer's
// codebook blobs (KvSnapshot::ParseCodebook) and residency window.
// Thread-safety: none (one stream, one thread).
#ifndef LATENTKV_WORKER_SERVER_PREFILL_ASSEMBLER_H_
#define LATENTKV_WORKER_SERVER_PREFILL_ASSEMBLER_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "latentkv/v1/worker.pb.h"
#include "worker/cache/kv_snapshot.h"

namespace latentkv::worker {

// OK when `theirs` can be imported here; FailedPrecondition naming the first
// field that differs (layers, KV heads, d_qk/d_vo of a layer, dtype,
// codec). TP sizes may differ: a stream holds the sending group's every KV
// head, which the receiving group re-shards (kv_snapshot_heads.h).
absl::Status CheckLayout(const latentkv::v1::KvLayout& theirs,
                         const latentkv::v1::KvLayout& ours);

class PrefillAssembler {
 public:
  // `ours`: this worker's layout (TransferLayout in kv_transfer.h).
  explicit PrefillAssembler(const latentkv::v1::KvLayout& ours);

  // Takes the stream's next message (its bytes are moved out). Errors:
  // FailedPrecondition for the first message's layout mismatch; DataLoss for
  // a message out of order, rows that are not whole rows, or a codebook blob
  // of the wrong size. After an error the stream must be abandoned.
  absl::Status Add(latentkv::v1::PrefillResponse& msg);

  // After the last message: the snapshot, or null when the request ended at
  // its first token (first_token() < 0). DataLoss for an empty stream,
  // missing layers, or rows holding non-finite values (KvSnapshot::CheckRows).
  absl::StatusOr<std::shared_ptr<const KvSnapshot>> Finish();

  // Of the first message (-1 and UNSPECIFIED before it).
  int32_t first_token() const { return first_token_; }
  latentkv::v1::FinishReason finish_reason() const { return finish_; }
  const latentkv::v1::TokenLogprobs& first_logprobs() const {
    return first_logprobs_;
  }

 private:
  absl::Status AddLayer(latentkv::v1::PrefillResponse& msg);

  const latentkv::v1::KvLayout ours_;
  std::shared_ptr<KvSnapshot> snap_ = std::make_shared<KvSnapshot>();
  bool first_ = true;
  int32_t layers_seen_ = 0;
  int32_t first_token_ = -1;
  latentkv::v1::FinishReason finish_ = latentkv::v1::FINISH_REASON_UNSPECIFIED;
  latentkv::v1::TokenLogprobs first_logprobs_;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_SERVER_PREFILL_ASSEMBLER_H_
