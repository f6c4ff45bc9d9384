// The ways a prompt's KV arrives in a sequence's pages without being
// computed here, behind one interface:
//  - "prefill": a prefill worker's rows of the whole prompt and its first
//    token (prefill/decode disaggregation; GenerationRequest::import_kv with
//    import_first_token >= 0), residency state included;
//  - "kvstore": rows of a stored prefix of the prompt (the shared kvstore;
//    import_kv with import_first_token = -1), a full cache shorter than the
//    prompt, the rest prefilled here;
//  - "local_prefix": whole pages of a prefix the local prefix cache holds,
//    shared by reference (the scheduler's admission hook).
// Fetching rows over the network happens before admission, on the request's
// thread (worker/server); Attach runs on the engine thread. An arrival never
// fails its request: when the KV does not fit or match, the sequence holds
// nothing and its prompt is computed here.
// Thread-safety: the engine thread's.
#ifndef LATENTKV_WORKER_ENGINE_KV_ARRIVAL_H_
#define LATENTKV_WORKER_ENGINE_KV_ARRIVAL_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "worker/cache/kv_cache.h"
#include "worker/cache/prefix_index.h"
#include "worker/engine/rank_kv_store.h"
#include "worker/engine/sequence.h"
#include "worker/kv/kv_pools.h"

namespace latentkv::worker {

// A sequence's KV with its residency state (codebook entries, query windows)
// out of and into the pools: what the engine and each tensor-parallel rank
// export and import. `residency` null: a full cache (rows only).
// Export: ExportKv, then the policy's state. Import: `kv` (Init'ed, holding
// nothing) gets the rows, then the policy its state; InvalidArgument for
// residency state without a policy, else what ImportKv / ImportState say.
// On an import error `kv` may hold pages: the caller releases them.
absl::StatusOr<KvSnapshot> ExportSequenceKv(const KvCache& cache,
                                            KvPools& pools,
                                            const SequenceKv& kv,
                                            const SequencePolicy* residency);
absl::Status ImportSequenceKv(KvCache& cache, KvPools& pools, SequenceKv& kv,
                              SequencePolicy* residency,
                              const KvSnapshot& snap);

// Publishes through `store` the whole blocks of `tokens` that `kv` (this
// rank's KV heads, a full cache) holds, without waiting on the network.
// False, publishing nothing, for a compressed cache (`residency` set: not a
// reusable prefix) or when the export fails (the request is unaffected).
bool PublishSequenceKv(const KvCache& cache, KvPools& pools,
                       const SequenceKv& kv, const SequencePolicy* residency,
                       std::vector<int32_t> tokens, RankKvStore* store);

class KvArrival {
 public:
  virtual ~KvArrival() = default;
  virtual std::string_view name() const = 0;
  // Whether this arrival is the one for `seq` (what the request carries).
  virtual bool Applies(const Sequence& seq) const = 0;
  // Makes seq->kv (Init'ed, holding nothing) hold the KV that arrived and
  // sets seq->num_cached (and, for a whole prompt, its first token); false,
  // with nothing held, when it could not be used.
  virtual bool Attach(Sequence* seq) = 0;
  // Attempts that held KV / that fell back to computing, prompt tokens that
  // arrived, and prompt tokens looked up.
  int64_t attached() const { return attached_; }
  int64_t failed() const { return failed_; }
  int64_t tokens() const { return tokens_; }
  int64_t looked_up() const { return looked_up_; }
  // An attach of `tokens` that was undone after all (another rank of the
  // group could not take its part): counted as a fallback instead.
  void Retract(int64_t tokens) {
    --attached_;
    ++failed_;
    tokens_ -= tokens;
  }

 protected:
  bool Count(bool ok, int64_t tokens) {
    (ok ? attached_ : failed_) += 1;
    if (ok) tokens_ += tokens;
    return ok;
  }
  void CountLookup(int64_t tokens) { looked_up_ += tokens; }

 private:
  int64_t attached_ = 0, failed_ = 0, tokens_ = 0, looked_up_ = 0;
};

std::unique_ptr<KvArrival> MakePrefillArrival(KvCache* cache, KvPools* pools);
std::unique_ptr<KvArrival> MakeKvStoreArrival(KvCache* cache, KvPools* pools);
// `index` may be null (no local prefix cache: nothing ever arrives).
std::unique_ptr<KvArrival> MakeLocalPrefixArrival(KvCache* cache,
                                                  PrefixIndex* index);

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_ENGINE_KV_ARRIVAL_H_
