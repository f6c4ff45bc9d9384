// Tensor-parallel worker groups: rank 0 (the leader) runs the Engine and the
// gRPC service; every other rank runs a TpFollower that repeats the leader's
// steps on its shard of the model (model/shard.h). Before each step the
// leader broadcasts a TpStep (proto/latentkv/v1/worker.proto): the
// changes to the KV pages (releases, prefix-cache sharing), then each
// chunk's id, start, tokens and residency settings.
// Every rank then reserves the same KV pages for its own KV heads and runs
// the same ModelRunner::Forward, whose o_proj and down_proj partial sums are
// all-reduced over the group's Communicator. Only the leader samples.
//
// KV that leaves or enters the group (prefill/decode transfer, the kvstore)
// is the group's whole: the leader gathers every rank's KV heads of an
// exported sequence (TpStep.export_id, then Communicator::GatherStrings),
// and scatters an imported sequence's heads to their ranks (TpStep.imports,
// then ScatterStrings), so another group of any size sees the same bytes
// (worker/cache/kv_snapshot_heads.h re-shards by KV-head range).
//
// The local prefix cache works the same way: the leader's index decides
// (matching, indexing, attaching, evicting), and each change reaches the
// followers as a TpKvOp in the order it happened, with the sequences'
// releases, so every rank's pages stay shared alike. The leader's index
// events feed KV-aware routing.
//
// Invariants: every rank sees the same steps in the same order, and each
// rank's KV cache holds the same token counts per (layer, local head), so
// page reservations that succeed on the leader succeed everywhere. This
// holds for full caches, SnapKV eviction and capacity (per-head decisions on
// identical counts); codebook layers use data-dependent page counts and are
// refused with more than one rank (see CheckTensorParallelResidency).
#ifndef LATENTKV_WORKER_TP_TENSOR_PARALLEL_H_
#define LATENTKV_WORKER_TP_TENSOR_PARALLEL_H_

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "worker/cache/prefix_index.h"
#include "worker/comm/communicator.h"
#include "worker/engine/engine.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/step_listener.h"

namespace latentkv::v1 {
class TpStep;
class TpImport;
class TpKvOp;
}  // namespace latentkv::v1

namespace latentkv::worker {

// InvalidArgument when `options` cannot run on `tp_size` ranks (codebook
// layers with tp_size > 1).
absl::Status CheckTensorParallelResidency(const ResidencyOptions& options,
                                          int num_layers, int tp_size);

// What the ranks of a group must agree on for their KV caches to stay in
// step (page size, KV dtype, memory bound, residency plan) and for KV to
// move between them (every layer's KV heads and dims), as text.
std::string GroupKvLayout(const EngineOptions& options,
                          const model::ModelConfig& shard_config);

// Every rank calls this once after the group forms: rank 0 gathers the
// ranks' `layout` strings and broadcasts the verdict. FailedPrecondition on
// every rank naming the first rank that differs from rank 0 (a group whose
// ranks are configured differently must not serve); the communicator's
// error when the group breaks.
absl::Status AgreeOnGroupLayout(Communicator* comm, const std::string& layout);

// The leader's StepListener: broadcasts each step from rank 0.
class TpLeader : public StepListener {
 public:
  explicit TpLeader(Communicator* comm) : comm_(comm) {}
  absl::Status OnStep(const std::vector<GroupKvOp>& ops,
                      const std::vector<StepChunkInfo>& chunks) override;
  void OnStop() override;
  int ranks() const override { return comm_->size(); }
  // A TpStep with export_id, then a gather of every rank's TpKv.
  absl::Status OnExport(const std::string& id, bool with_state,
                        const KvSnapshot& mine,
                        std::vector<KvSnapshot>* others) override;
  // A TpStep with one import, then a scatter of the ranks' TpKv parts.
  absl::Status OnImport(const std::vector<GroupKvOp>& ops,
                        const StepImportInfo& info,
                        const std::vector<KvSnapshot>& parts) override;
  // A TpStep with one import each rank fetches itself (store keys or a
  // pull), then a gather of the ranks' verdicts.
  absl::StatusOr<RankFetchResult> OnRankFetch(const std::vector<GroupKvOp>& ops,
                                              const StepImportInfo& info,
                                              const RankFetch& fetch) override;

 private:
  absl::Status Send(const latentkv::v1::TpStep& step);

  Communicator* comm_;
  std::string buffer_;
};

// A non-leader rank. Thread-safety: Run() on one thread.
class TpFollower {
 public:
  // `shard`: this rank's weights; `options`: the leader's KV and residency
  // options (the KV memory bound is per rank), and this rank's own
  // kv_store link (its KV heads; null: none).
  static absl::StatusOr<std::unique_ptr<TpFollower>> Create(
      std::shared_ptr<const model::ModelWeights> shard,
      std::unique_ptr<kernels::Backend> backend, const EngineOptions& options,
      Communicator* comm);
  ~TpFollower();
  // Runs the leader's steps until it broadcasts shutdown (OK) or the group
  // breaks (the communicator's error: a dead leader or peer).
  absl::Status Run();
  // Steps run so far.
  int64_t steps() const { return steps_; }

 private:
  struct Seq {
    SequenceKv kv;
    std::shared_ptr<SequencePolicy> residency;
  };
  TpFollower() = default;
  void Release(const std::string& id);
  // Starts sequence `id` over (holding nothing) with the residency plan
  // when `compressed`.
  Seq& Start(const std::string& id, bool compressed, int32_t prompt_len);
  // Starts im's sequence over and imports `snap` (this rank's KV heads)
  // into it, with the residency plan when compressed; on any error (snap's
  // own included) the sequence holds nothing and the error is returned.
  absl::Status ImportInto(const latentkv::v1::TpImport& im,
                          const absl::StatusOr<KvSnapshot>& snap);
  // Imports this rank's part (a TpKv) of a transferred sequence.
  absl::Status Import(const latentkv::v1::TpImport& im,
                      const std::string& part);
  // One of the leader's page changes (GroupKvOp); Internal when this rank
  // cannot make it the same way (diverged).
  absl::Status Apply(const latentkv::v1::TpKvOp& op);
  // This rank's KV heads of sequence `id` as a TpKv (an error part when
  // they cannot be exported).
  std::string Export(const std::string& id, bool with_state);
  // A PUBLISH op: sequence `id`'s KV heads go to kv_store_ (if any).
  void Publish(const std::string& id, absl::Span<const int32_t> tokens);
  // A PARK op: sequence `id`'s KV heads go to kv_parking_ (if any).
  void Park(const std::string& id);
  // This rank's heads of an import it fetches itself (im.store_keys from
  // its kvstore link, im.pull from the prefill ranks), imported: "=" and
  // the bytes fetched when done, else why not (holding nothing of it).
  std::string ImportFetched(const latentkv::v1::TpImport& im);

  std::shared_ptr<const model::ModelWeights> weights_;
  std::unique_ptr<kernels::Backend> backend_;
  Communicator* comm_ = nullptr;
  RankKvStore* kv_store_ = nullptr;    // not owned; null: no store
  KvParking* kv_parking_ = nullptr;    // not owned; null: no parking
  RankKvPuller* kv_puller_ = nullptr;  // not owned; null: no puller
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<KvPools> pools_;  // the pools of cache_'s pages
  // The local prefix cache, repeating the leader's (null when off).
  std::unique_ptr<PrefixIndex> prefix_;
  std::shared_ptr<const ResidencyPolicy> policy_;  // null: full cache
  std::unordered_map<std::string, Seq> seqs_;
  int64_t steps_ = 0;
};

}  // namespace latentkv::worker

#endif  // LATENTKV_WORKER_TP_TENSOR_PARALLEL_H_
