// A hook on the engine's steps: a tensor-parallel group leader broadcasts
// each step to the other ranks before running it (worker/tp/), so that every
// rank runs the same forward pass on its shard.
#ifndef LATENTKV_WORKER_ENGINE_STEP_LISTENER_H_
#define LATENTKV_WORKER_ENGINE_STEP_LISTENER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cache/kv_snapshot.h"
#include "worker/engine/rank_kv_store.h"

namespace latentkv::worker {

// One sequence's part of a step (views valid during OnStep only).
struct StepChunkInfo {
  const std::string* id = nullptr;
  int64_t start = 0;  // 0: the sequence's KV starts over (new or preempted)
  const int32_t* tokens = nullptr;  // [len]
  int32_t len = 0;
  int32_t prompt_len = 0;
  bool compressed = false;  // runs the server's residency plan
  bool logits = false;      // the leader samples from its last row
  bool all_logits = false;  // every row's logits (prompt logprobs)
};

// A change to the KV pages outside a step's chunks, which every rank of a
// group makes in the same order as the leader made it: freeing a
// sequence's pages, and the local prefix cache's page sharing (indexing a
// sequence's blocks, attaching a new sequence to cached blocks, evicting
// cached blocks), so every rank's cache holds the same pages; and
// publishing a finished sequence's KV heads to the shared kvstore (each
// rank its own, before the release that follows).
struct GroupKvOp {
  enum class Kind { kRelease, kIndex, kAttach, kEvict, kPublish, kPark };
  Kind kind = Kind::kRelease;
  std::string id;               // every kind but kEvict: the sequence
  std::vector<int32_t> tokens;  // kIndex, kAttach, kPublish: tokens [0, n)
  int64_t n = 0;  // kIndex, kAttach, kPublish: tokens; kEvict: blocks
};

// A sequence whose KV arrived from outside the group (views valid during
// OnImport only).
struct StepImportInfo {
  const std::string* id = nullptr;
  int32_t prompt_len = 0;
  bool compressed = false;  // runs the server's residency plan
  bool prompt_in = false;   // the whole prompt arrived (a prefill transfer)
};

// Called on the engine thread. Thread-safety: one caller.
class StepListener {
 public:
  virtual ~StepListener() = default;
  // Before the forward pass over `chunks`: `ops` happened since the last
  // call (sequences finished, cancelled or preempted, prefix-cache sharing)
  // and must be applied first, in order. Empty `chunks` and `ops`: a
  // keep-alive while idle (at least every EngineOptions::keepalive_ms). A
  // non-OK status fails every request with UNAVAILABLE and the engine
  // refuses new ones.
  virtual absl::Status OnStep(const std::vector<GroupKvOp>& ops,
                              const std::vector<StepChunkInfo>& chunks) = 0;
  // The engine is stopping (after its last step).
  virtual void OnStop() = 0;

  // Ranks of the group, this one (rank 0) included. With more than one,
  // the engine's KV holds only rank 0's KV heads, and KV that leaves or
  // enters the engine goes through OnExport and OnImport.
  virtual int ranks() const { return 1; }
  // Sequence `id` (still holding its pages) exports its KV: on return
  // (*others)[r - 1] holds rank r's KV heads, each shaped as `mine` (rank
  // 0's part), with residency state when `with_state`. UNAVAILABLE or
  // DEADLINE_EXCEEDED: the group broke; other errors: a rank could not
  // export (the request fails, the group goes on).
  virtual absl::Status OnExport(const std::string& id, bool with_state,
                                const KvSnapshot& mine,
                                std::vector<KvSnapshot>* others) {
    return absl::UnimplementedError("KV export needs a tensor-parallel group");
  }
  // Rank 0 has imported parts[0] of a sequence's transferred KV; every rank
  // r imports parts[r]. `ops` (since the last OnStep) are applied first, so
  // every rank imports into the same free pages. Any error means the group
  // broke.
  virtual absl::Status OnImport(const std::vector<GroupKvOp>& ops,
                                const StepImportInfo& info,
                                const std::vector<KvSnapshot>& parts) {
    return absl::UnimplementedError("KV import needs a tensor-parallel group");
  }
  // Rank 0 has imported its KV heads of a sequence's KV that every rank
  // fetches for itself: its heads of the stored blocks `fetch.store_keys`
  // (its kvstore link), or of the prefill ranks' parked KV `fetch.pull`
  // (its puller). Every other rank fetches and imports its heads (after
  // `ops`). `all`: every rank did; otherwise each rank holds none of it. An
  // error means the group broke.
  struct RankFetch {
    std::vector<uint64_t> store_keys;
    const KvPull* pull = nullptr;
  };
  struct RankFetchResult {
    bool all = false;
    int64_t bytes = 0;  // what the other ranks fetched
  };
  virtual absl::StatusOr<RankFetchResult> OnRankFetch(
      const std::vector<GroupKvOp>& ops, const StepImportInfo& info,
      const RankFetch& fetch) {
    return absl::UnimplementedError("KV import needs a tensor-parallel group");
  }
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_STEP_LISTENER_H_
