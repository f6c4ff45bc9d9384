// Rank-to-rank prefill -> decode transfer, the prefill side: when a prefill
// group finishes a prompt, each of its ranks parks its own KV heads (rows
// and residency state, kv_arrival.h's ExportSequenceKv) here under the
// sequence id, and each rank of the decode group pulls the heads it needs
// straight from the ranks that hold them (worker/server/kv_source.h), so
// no KV passes through either group's leader.
//
// Heads are named by the group's global KV-head index: this rank parks
// heads [head_offset, head_offset + n). Take hands out any sub-range once;
// an entry leaves when all its heads were taken, after `ttl` (the decode
// side gave up or died), or, beyond max_bytes, oldest first.
// Thread-safety: thread-safe (the engine parks, RPC threads take).
#ifndef LATENTKV_WORKER_ENGINE_KV_PARKING_H_
#define LATENTKV_WORKER_ENGINE_KV_PARKING_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/cache/kv_snapshot.h"

namespace latentkv::worker {

struct KvParkingOptions {
  int32_t head_offset = 0;  // global index of this rank's first KV head
  int32_t q_per_kv = 1;     // query heads per KV head (query windows)
  // An entry not taken whole within this long is dropped. Default 60 s.
  absl::Duration ttl = absl::Seconds(60);
  // Bound on parked row/state bytes; beyond it the oldest entries go.
  // Default 1 GiB.
  int64_t max_bytes = int64_t{1} << 30;
};

class KvParking {
 public:
  explicit KvParking(const KvParkingOptions& options) : options_(options) {}

  // Parks `part` (this rank's KV heads) under `id`, replacing an entry of
  // the same id.
  void Park(const std::string& id, KvSnapshot part);

  // Global KV heads [begin, end) of entry `id`, waiting up to `wait` for it
  // to be parked (the prefill group's other ranks park a step after the
  // leader answers). NotFound when it is not parked in time (or expired);
  // InvalidArgument when the range is not within this rank's heads;
  // FailedPrecondition when some of those heads were taken already.
  absl::StatusOr<KvSnapshot> Take(const std::string& id, int32_t begin,
                                  int32_t end, absl::Duration wait);

  int64_t parked_bytes() const;
  int64_t entries() const;
  int64_t dropped() const;  // expired or pushed out before taken whole

 private:
  struct Entry {
    KvSnapshot part;
    std::vector<bool> taken;  // [part's heads]
    int64_t bytes = 0;
    absl::Time parked;
  };
  void DropLocked(std::map<std::string, Entry>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const KvParkingOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  int64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_KV_PARKING_H_
